"""``gaunt`` with ``compile_edge_product=True``: the torch.compile-fused sparse product against the eager strategies.

Float64 tolerances are the harness's (``REFERENCE_TOL = EQUIVARIANCE_TOL = 1e-10`` max abs): the
compiled product sums the same Gaunt entries as the reference, so it agrees to round-off (about
1e-15). One product with unordered and repeated degrees is compiled once for the module (about
20 s on a 2-core CPU) and shared by the tests.
"""

import copy
import pickle
import warnings

import harness
import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from equimol.tp import TensorProduct
from equimol.tp.gaunt_compiled import COMPILE_MAX_ENTRIES

IRREPS = ("2x2e + 2x0e + 2x2e", "1o + 2e", "2x1o + 2x3o")


@pytest.fixture(scope="module")
def compiled():
    return TensorProduct(*IRREPS, backend="gaunt", strategy="edge", compile_edge_product=True, dtype=torch.float64)


@pytest.fixture(scope="module")
def eager():
    return TensorProduct(*IRREPS, backend="gaunt", strategy="edge", dtype=torch.float64)


def _inputs_and_grads(tp, count, seed):
    x1, x2, weight = (t.requires_grad_(True) for t in harness.random_inputs(tp, count, seed=seed))
    grad_out = torch.randn(count, tp.irreps_out.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    out = tp(x1, x2, weight)
    return out, torch.autograd.grad(out, (x1, x2, weight), grad_out), (x1, x2, weight)


def test_matches_reference_and_eager_gradients_float64(compiled, eager):
    for count, seed in ((7, 1), (3, 2)):  # two sample counts: one dynamic-shape graph serves both
        out, grads, (x1, x2, weight) = _inputs_and_grads(compiled, count, seed)
        assert compiled.compiled_edge.failed is None  # a compilation failure would fall back to eager
        expected, expected_grads, _ = _inputs_and_grads(eager, count, seed)
        reference = harness.gaunt_reference(x1.detach(), x2.detach(), weight.detach(), *IRREPS)
        assert (out - reference).abs().max().item() <= harness.REFERENCE_TOL
        assert (out - expected).abs().max().item() <= harness.REFERENCE_TOL
        for mine, theirs in zip(grads, expected_grads):
            assert (mine - theirs).abs().max().item() <= harness.REFERENCE_TOL
    assert compiled.compiled_edge._functions is not None


def test_equivariant_under_rotation_and_inversion(compiled):
    assert harness.tp_equivariance_error(compiled, count=5, rotations=3) <= harness.EQUIVARIANCE_TOL


def test_gradcheck_compiled_backward_and_exact_double_backward(compiled):
    """gradcheck runs the compiled backward; gradgradcheck (create_graph) the eager differentiable one."""
    harness.check_gradients(compiled, count=2)
    assert compiled.compiled_edge.failed is None


def test_compilation_failure_warns_once_and_falls_back_to_eager(monkeypatch, eager):
    tp = TensorProduct(*IRREPS, backend="gaunt", strategy="edge", compile_edge_product=True, dtype=torch.float64)

    def broken_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken_compile)
    x1, x2, weight = harness.random_inputs(tp, 4, seed=5)
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no C\\+\\+ compiler.*eager 'edge'"):
        out = tp(x1, x2, weight)
    assert (out - eager(x1, x2, weight)).abs().max().item() <= harness.REFERENCE_TOL
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tp(x1, x2, weight)
    assert not [w for w in caught if "torch.compile failed" in str(w.message)]  # warned once only
    assert "no C++ compiler" in tp.compiled_edge.failed


def test_tracers_see_the_eager_product(compiled, eager):
    """make_fx (model export, trainer.compile_step) traces the eager edge product, not the compiled call."""
    x1, x2, weight = harness.random_inputs(compiled, 3, seed=6)
    graph = make_fx(lambda a, b, c: compiled(a, b, c))(x1, x2, weight)
    assert (graph(x1, x2, weight) - eager(x1, x2, weight)).abs().max().item() <= harness.REFERENCE_TOL


def test_copies_and_pickles_drop_the_compiled_functions(compiled):
    compiled(*harness.random_inputs(compiled, 2, seed=7))
    copied = copy.deepcopy(compiled)
    assert copied.compiled_edge._functions is None
    assert copied.compiled_edge.spec == compiled.compiled_edge.spec
    restored = pickle.loads(pickle.dumps(compiled.compiled_edge))
    assert restored._functions is None and restored.spec == compiled.compiled_edge.spec


def test_compile_refuses_the_grid_strategy_and_large_couplings():
    with pytest.raises(ValueError, match="compile_edge_product=True applies to the 'edge' strategy"):
        TensorProduct(*IRREPS, backend="gaunt", strategy="grid", compile_edge_product=True)
    large = " + ".join(f"2x{l}{'eo'[l % 2]}" for l in range(5))
    with pytest.raises(ValueError, match=f"nonzero entries \\(limit {COMPILE_MAX_ENTRIES}\\)"):
        TensorProduct(
            large, "0e + 1o + 2e + 3o + 4e", large, backend="gaunt", strategy="edge", compile_edge_product=True
        )


def test_model_with_compiled_products_trains_like_the_eager_one(shared_data):
    """A 2-layer model with ``tp_options: {compile_edge_product: true}``: energies, forces (compiled backward) and the
    parameter gradient of a force loss (create_graph, the eager double backward) equal the eager model's."""
    from test_model_structures import build_structure, graph_of, tiny_config

    from equimol.models import build_model

    graph = graph_of(build_structure("3bpa", shared_data))
    results = []
    for options in ({"strategy": "edge"}, {"strategy": "edge", "compile_edge_product": True}):
        model = build_model(tiny_config(tp_backend="gaunt", tp_options=options, lmax=1)).train()
        output = model(graph)
        loss = output["energy"].sum() + output["forces"].pow(2).sum()
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
        compiled = [m.compiled_edge for m in model.modules() if getattr(m, "compiled_edge", None) is not None]
        assert len(compiled) == (2 if options.get("compile_edge_product") else 0)
        assert all(c.failed is None for c in compiled)
        results.append((output["energy"].detach(), output["forces"].detach(), grads))
    (energy, forces, grads), (energy_c, forces_c, grads_c) = results
    assert (energy - energy_c).abs().max().item() <= harness.REFERENCE_TOL * max(1.0, energy.abs().max().item())
    assert (forces - forces_c).abs().max().item() <= harness.REFERENCE_TOL
    for mine, theirs in zip(grads_c, grads):
        assert (mine - theirs).abs().max().item() <= harness.REFERENCE_TOL * max(1.0, theirs.abs().max().item())
