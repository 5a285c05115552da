"""trainer.compile_step: the traced, compiled energy-and-forces graph (train/compiled_forces.py).

The graph is compiled with the ``aot_eager`` backend here: the same make_fx trace and the same AOTAutograd
differentiation as ``inductor``, without generating C++ (minutes of compiler time per model on CI). In
float64 the compiled graph runs the eager model's operators in the same order, so energies, forces,
stress and the weights' gradients agree to 1e-10 relative (round-off of a re-associated sum at most).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from equimol.train.compiled_forces import CompiledForces
from equimol.train.losses import weighted_loss
from equimol.train.module import PotentialModule
from harness import tiny_model_section
from test_model_structures import single_thread  # noqa: F401
from torch_geometric.data import Batch

from equimol.graph import atoms_to_graph
from equimol.models import build_model

RELATIVE = 1e-10
STATISTICS = {"avg_num_neighbors": 6.0, "e0s": None, "energy_shift": 0.1, "energy_scale": 0.9}


def _model(**changes) -> torch.nn.Module:
    section = tiny_model_section(["H", "C", "N", "O", "Si"], **{**STATISTICS, "radial_cutoff": 3.5, **changes})
    return build_model(section).train()


def _batch(structures, seed: int) -> Batch:
    rng = np.random.default_rng(seed)
    graphs = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
        graph = atoms_to_graph(atoms, 3.5, torch.float64)
        graph.energy = torch.tensor([float(rng.normal())], dtype=torch.float64)
        graph.forces = torch.tensor(rng.normal(size=(len(atoms), 3)), dtype=torch.float64)
        graphs.append(graph)
    return Batch.from_data_list(graphs)


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max().clamp_min(1e-30)
    assert (actual - expected).abs().max() <= RELATIVE * scale, (actual - expected).abs().max() / scale


def _loss_and_gradients(model, prediction, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    from equimol.train.config import LossConfig

    loss, _ = weighted_loss(prediction, batch, batch.energy, LossConfig(energy_weight=1.0, forces_weight=10.0))
    return loss, torch.autograd.grad(loss, list(model.parameters()))


# 2, 2 and 3 structures: the first batch's structure count equals edge_index's 2 rows (duck sizing would
# tie them), and the last changes it
MOLECULES = (
    [molecule("CH3CH2OH"), molecule("CH4")],
    [molecule("H2O"), molecule("C6H6")],
    [molecule("H2O"), molecule("C6H6"), molecule("NH3")],
)


def _assert_equals_eager_on_batches_of_different_sizes(model, compiled) -> None:
    # two batches with different numbers of structures, atoms and edges: one graph serves both
    for seed, structures in enumerate(MOLECULES):
        batch = _batch(structures, seed)
        expected, got = model(batch, compute_forces=True), compiled(batch)
        for name in ("energy", "node_energy", "forces"):
            _close(got[name], expected[name])
        loss, gradients = _loss_and_gradients(model, expected, batch)
        compiled_loss, compiled_gradients = _loss_and_gradients(model, got, batch)
        _close(compiled_loss, loss)
        for gradient, compiled_gradient in zip(gradients, compiled_gradients):
            _close(compiled_gradient, gradient)


@pytest.mark.parametrize("many_body", ["gaunt", "cg"])
def test_compiled_graph_equals_the_eager_model_and_follows_the_weights(many_body):
    model = _model(interaction="product_basis", message_lmax=2, many_body=many_body, correlation=2).double()
    compiled = CompiledForces(model, backend="aot_eager")
    _assert_equals_eager_on_batches_of_different_sizes(model, compiled)
    with torch.no_grad():  # an optimizer step: the graph must read the weights, not a copy
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    _assert_equals_eager_on_batches_of_different_sizes(model, compiled)


def test_repeated_counts_get_a_graph_of_their_own_and_other_counts_the_graph_for_any():
    # 3BPA's batches all hold 5 x 27 atoms: a graph with those counts fixed is cheaper to compile and to
    # run. Batches with those counts but other edge counts use it; a batch with other counts gets the graph
    # for any counts, and the fixed-count graph still serves its counts afterwards
    model = _model(interaction="product_basis", message_lmax=2, many_body="gaunt", correlation=2).double()
    compiled = CompiledForces(model, backend="aot_eager")
    same = [_batch(MOLECULES[0], seed) for seed in range(3)]
    assert len({int(batch.edge_index.shape[1]) for batch in same}) > 1  # the edge counts differ
    other = _batch(MOLECULES[2], seed=4)
    for batch, graphs in zip([*same, other, same[0]], [[], [(14, 2)], [(14, 2)], [(14, 2), None], [(14, 2), None]]):
        expected, got = model(batch, compute_forces=True), compiled(batch)
        for name in ("energy", "node_energy", "forces"):
            _close(got[name], expected[name])
        assert list(compiled.graphs) == graphs
    any_counts = CompiledForces(model, backend="aot_eager", fixed_counts=False)
    for batch in same[:2]:
        _close(any_counts(batch)["forces"], model(batch, compute_forces=True)["forces"])
    assert list(any_counts.graphs) == [None]


def test_numel_as_sizes_keeps_a_graph_whole_where_its_sizes_are_fixed():
    from torch._dynamo.utils import counters

    from equimol.utils.tracing import no_duck_sizing, numel_as_sizes, trace_forces

    def function(x, y):
        return x * x.numel() + y.sum() * y.numel()

    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    graph = numel_as_sizes(trace_forces(function, x, y))
    assert not any(node.target is torch.ops.aten.sym_numel.default for node in graph.graph.nodes)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(graph, backend="aot_eager", dynamic=True)
    for rows in (4, 5):
        x = torch.randn(rows, 3, dtype=torch.float64)
        torch._dynamo.mark_static(x, 0)
        with no_duck_sizing():
            _close(compiled(x, y), function(x, y))
    assert not counters["graph_break"]


def test_compiled_stress_equals_the_eager_model():
    model = _model().double()
    compiled = CompiledForces(model, compute_stress=True, backend="aot_eager")
    batch = _batch([bulk("Si", "diamond", a=5.43), bulk("C", "diamond", a=3.57, cubic=True)], seed=3)
    expected, got = model(batch, compute_forces=True, compute_stress=True), compiled(batch)
    for name in ("energy", "forces", "stress"):
        _close(got[name], expected[name])


def test_training_step_uses_the_compiled_graph(monkeypatch):
    section = tiny_model_section(["H", "C", "N", "O"], **STATISTICS, radial_cutoff=3.5)
    eager = PotentialModule(model=section, loss={"forces_weight": 10.0})
    module = PotentialModule(model=section, loss={"forces_weight": 10.0}, compile_step=True)
    module.model.load_state_dict(eager.model.state_dict())
    module.model.double(), eager.model.double()
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    monkeypatch.setattr(eager, "log", lambda *args, **kwargs: None)
    monkeypatch.setattr(CompiledForces.__init__, "__defaults__", (False, "aot_eager", True))
    batch = _batch(MOLECULES[0], seed=5)
    for step in range(2):  # the first step runs the eager model, the second the graph for these counts
        _close(module.training_step(batch, step), eager.training_step(batch, step))
    assert list(module._compiled_forces) == [False]
    assert list(module._compiled_forces[False].graphs) == [(14, 2)]


def _failing_backend(graph_module, example_inputs):
    raise RuntimeError("no C++ compiler found")


def test_a_failing_compiler_falls_back_to_the_eager_model_with_a_warning():
    model = _model().double()
    compiled = CompiledForces(model, backend=_failing_backend)
    batch = _batch(MOLECULES[0], seed=7)
    compiled(batch)  # the eager model; the compilation is at the second batch
    with pytest.warns(UserWarning, match="trainer.compile_step: the compilation failed"):
        got = compiled(batch)
    _close(got["forces"], model(batch, compute_forces=True)["forces"])
    _close(compiled(batch)["energy"], model(batch, compute_forces=True)["energy"])  # no second attempt


def test_inductor_compiles_each_graph_as_one_unit_with_the_cpus_vector_isa(monkeypatch):
    # the cold-compile settings reach torch.compile (for inductor only: other backends take no options);
    # the graph itself is compiled with aot_eager here, the C++ build is the slow test below
    calls = []
    compile_ = torch.compile

    def recording_compile(graph, **kwargs):
        calls.append(kwargs)
        return compile_(graph, **{**kwargs, "backend": "aot_eager", "options": None})

    monkeypatch.setattr(torch, "compile", recording_compile)
    model = _model().double()
    batch = _batch(MOLECULES[0], seed=11)
    inductor, other = CompiledForces(model), CompiledForces(model, backend="aot_eager")
    for _ in range(2):
        _close(inductor(batch)["forces"], model(batch, compute_forces=True)["forces"])
        other(batch)
    assert [call["backend"] for call in calls] == ["inductor", "aot_eager"]
    assert calls[0]["options"] == {"cpp_wrapper": True, "cpp.vec_isa_ok": True}
    assert calls[1]["options"] is None


@pytest.mark.slow
def test_inductor_graph_equals_the_eager_model_on_batches_of_different_sizes():
    # the real C++ build (one unit per graph, symbolic sizes): forces and weight gradients as eager
    model = _model(interaction="product_basis", message_lmax=2, many_body="gaunt", correlation=2).double()
    compiled = CompiledForces(model)
    _assert_equals_eager_on_batches_of_different_sizes(model, compiled)
    assert list(compiled.graphs) == [None]  # compiled for any counts, not the eager fallback
