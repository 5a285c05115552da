"""Configuration, output contract, backend swap, seeding and dtype handling of the model."""

from __future__ import annotations

import pytest
import torch
from test_model_structures import (  # noqa: F401  (single_thread: autouse fixture)
    RADIAL_CUTOFF,
    build_structure,
    graph_of,
    single_thread,
    tiny_config,
    tiny_model,
)
from torch_geometric.data import Batch

from equimol.models import ModelConfig, average_num_neighbors, build_model
from equimol.tp import available_backends


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match=r"unknown key\(s\) model\.chanels;"):
        build_model(tiny_config(chanels=8))
    with pytest.raises(ValueError, match=r"unknown key\(s\) model\.spe\.modes;"):
        build_model(tiny_config(spe={"modes": "exact"}))


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"channels": "8"}, "channels"),
        ({"lmax": -1}, "lmax"),
        ({"num_layers": 0}, "num_layers"),
        ({"radial_cutoff": -2.0}, "radial_cutoff"),
        ({"envelope_exponent": 1}, "envelope_exponent"),
        ({"radial_mlp_hidden": [8, 0]}, "radial_mlp_hidden"),
        ({"many_body": "ace"}, "many_body"),
        ({"correlation": 9}, "correlation"),
        ({"avg_num_neighbors": None}, "avg_num_neighbors"),
        ({"dtype": "float16"}, "dtype"),
        ({"seed": 1.5}, "seed"),
        ({"tp_options": {"dtype": "float32"}}, "tp_options"),
        ({"spe": {"mode": "lanczos"}}, "spe.mode"),
        ({"spe": {"num_filters": 0}}, "spe.num_filters"),
        ({"spe": {"spectral_scale": -1.0}}, "spe.spectral_scale"),
        ({"e0s": {"H": -13.6}}, "e0s"),
        ({"energy_scale": {"H": "big"}}, "energy_scale"),
    ],
)
def test_bad_values_name_their_key(overrides, key):
    with pytest.raises(ValueError, match=f"'{key}'|{key}"):
        build_model(tiny_config(**overrides))


def test_bad_species_and_backend_errors():
    with pytest.raises(ValueError, match="'Xx' is not a chemical symbol"):
        build_model(tiny_config(species=["H", "Xx"]))
    with pytest.raises(ValueError, match="lists an element twice"):
        build_model(tiny_config(species=["H", 1]))
    with pytest.raises(ValueError, match=r"model\.tp_backend must be one of \[.*'cg'.*\], got 'fast'"):
        build_model(tiny_config(tp_backend="fast"))
    with pytest.raises(
        ValueError, match=r"unknown key\(s\) model\.tp_options\.rank_of_cp: backend 'cg' does not accept option"
    ):
        build_model(tiny_config(tp_options={"rank_of_cp": 3}))


def test_unknown_atomic_number_and_wrong_graph_are_clear_errors():
    model = tiny_model()
    graph = graph_of(build_structure("ch4"))
    graph.atomic_numbers[0] = 26
    with pytest.raises(ValueError, match=r"atomic number\(s\) \[26\] are not among the model's species"):
        model(graph)
    with pytest.raises(ValueError, match="graph.pos is torch.float32 but the model is torch.float64"):
        model(graph_of(build_structure("ch4"), torch.float32))
    incomplete = graph_of(build_structure("ch4"))
    del incomplete.cell_offsets
    with pytest.raises(ValueError, match=r"graph lacks field\(s\) \['cell_offsets'\]"):
        model(incomplete)


def test_output_contract_and_attributes():
    model = tiny_model()
    assert model.radial_cutoff == RADIAL_CUTOFF
    assert model.species == [1, 6, 7, 8, 11, 29, 79]
    assert model.dtype == torch.float64
    graphs = [graph_of(build_structure(name)) for name in ("ch4", "cu_fcc", "square")]
    batch = Batch.from_data_list(graphs)
    out = model(batch, compute_stress=True)
    assert set(out) == {"energy", "node_energy", "forces", "stress"}
    assert out["energy"].shape == (3,) and out["node_energy"].shape == (batch.num_nodes,)
    assert out["forces"].shape == (batch.num_nodes, 3) and out["stress"].shape == (3, 3, 3)
    assert not out["forces"].requires_grad  # eval mode: no create_graph
    separate = [model(graph, compute_stress=True) for graph in graphs]
    for index, single in enumerate(separate):
        assert torch.allclose(out["energy"][index], single["energy"][0], rtol=0, atol=1e-12)
        assert torch.allclose(out["stress"][index], single["stress"][0], rtol=0, atol=1e-12)
    assert torch.allclose(torch.cat([s["forces"] for s in separate]), out["forces"], rtol=0, atol=1e-12)
    assert torch.allclose(out["node_energy"].sum(), out["energy"].sum(), rtol=0, atol=1e-10)
    assert set(model(graphs[0], compute_forces=False)) == {"energy", "node_energy"}


def test_training_mode_forces_keep_the_graph():
    model = build_model(tiny_config()).train()
    out = model(graph_of(build_structure("ch4")))
    assert out["forces"].requires_grad  # create_graph=True, for force losses


def test_e0s_shift_and_scale_enter_per_species():
    graph = graph_of(build_structure("ch4"))
    base = tiny_model()(graph, compute_forces=False)["node_energy"]
    e0s = {"H": -13.5, "C": -1029.0, "N": 0.0, "O": 0.0, "Na": 0.0, "Cu": 0.0, "Au": 0.0}
    shifted = tiny_model(e0s=e0s, energy_shift=0.25, energy_scale={**dict.fromkeys(e0s, 1.0), "C": 2.0})
    out = shifted(graph, compute_forces=False)["node_energy"]
    is_carbon = graph.atomic_numbers == 6
    base_raw = base  # scale 1, shift 0, E0 0
    expected = torch.where(is_carbon, 2.0 * base_raw - 1029.0, base_raw - 13.5) + 0.25
    assert torch.allclose(out, expected, rtol=0, atol=1e-10)
    numeric_keys = tiny_model(e0s={1: -13.5, 6: -1029.0, 7: 0, 8: 0, 11: 0, 29: 0, 79: 0})
    assert torch.equal(numeric_keys.readout.e0s[:2], torch.tensor([-13.5, -1029.0], dtype=torch.float64))


@pytest.mark.parametrize("backend", available_backends())
def test_backend_swap_is_one_key(backend):
    config = tiny_config(tp_backend=backend)
    assert {k: v for k, v in config.items() if k != "tp_backend"} == {
        k: v for k, v in tiny_config().items() if k != "tp_backend"
    }
    model = build_model(config).eval()
    assert all(block.tensor_product.name == backend for block in model.interactions)
    out = model(graph_of(build_structure("benzene")), compute_stress=True)
    assert all(torch.isfinite(value).all() for value in out.values())


def test_seeding_is_deterministic_and_leaves_global_state_alone():
    rng_state = torch.random.get_rng_state()
    first, second = build_model(tiny_config(seed=3)), build_model(tiny_config(seed=3))
    third = build_model(tiny_config(seed=4))
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert torch.get_default_dtype() == torch.float32
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, c) for a, c in zip(first.parameters(), third.parameters()))


def test_float32_model_is_the_float64_model_rounded():
    model64 = build_model(tiny_config())
    model32 = build_model(tiny_config(dtype="float32"))
    assert model32.dtype == torch.float32
    for (name, p64), p32 in zip(model64.named_parameters(), model32.parameters()):
        assert p32.dtype == torch.float32 and torch.equal(p32, p64.float()), name


def test_config_roundtrip_and_average_num_neighbors():
    config = ModelConfig.from_dict(tiny_config())
    assert ModelConfig.from_dict(config.to_dict()) == config
    graphs = [graph_of(build_structure(name)) for name in ("ch4", "benzene")]
    expected = sum(g.edge_index.shape[1] for g in graphs) / sum(g.num_nodes for g in graphs)
    assert average_num_neighbors(graphs) == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least one graph"):
        average_num_neighbors([])


def test_many_body_gaunt_option():
    model = build_model(tiny_config(many_body="gaunt")).eval()
    out = model(graph_of(build_structure("benzene")))
    assert torch.isfinite(out["forces"]).all()


@pytest.mark.parametrize("mode", ["exact", "chebyshev"])
def test_isolated_atoms_have_zero_forces_and_no_nan(mode):
    """No edges at all (empty Laplacian, empty message sums): energies are the per-atom baselines."""
    from ase import Atoms

    model = tiny_model(spe={"mode": mode})
    far_apart = Atoms("HO", positions=[[0, 0, 0], [0, 0, 10.0]])
    out = model(graph_of(far_apart), compute_stress=True)
    assert torch.equal(out["forces"], torch.zeros(2, 3, dtype=torch.float64))
    assert torch.equal(out["stress"], torch.zeros(1, 3, 3, dtype=torch.float64))
    single = model(graph_of(Atoms("H", positions=[[0, 0, 0]])))
    assert torch.isfinite(single["energy"]).all()
    assert torch.allclose(out["node_energy"][0], single["node_energy"][0], rtol=0, atol=1e-12)


def test_state_dict_roundtrip_restores_the_model():
    """A checkpoint is ``config.to_dict()`` plus ``state_dict()``; loading it reproduces the outputs."""
    trained = build_model(tiny_config(seed=1, many_body="gaunt"))
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(0.01)
    restored = build_model(trained.config.to_dict() | {"seed": 2})
    restored.load_state_dict(trained.state_dict())
    graph = graph_of(build_structure("benzene"))
    first, second = trained.eval()(graph), restored.eval()(graph)
    assert torch.equal(first["energy"], second["energy"]) and torch.equal(first["forces"], second["forces"])
