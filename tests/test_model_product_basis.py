"""The MACE-style model options: product-basis layers, species self-connection, per-layer read-outs.

Symmetry tolerance (float64): 1e-9 max abs (eV, eV/Å, eV/Å^3), as for the other model tests; the exact
backends reach ~1e-14. Finite-difference forces: central differences with step 1e-5 Å, whose truncation
(~h^2 |d^3E|) and round-off (~1e-16 |E| / h) errors are both below 1e-9 eV/Å here, compared with the
autograd forces to 1e-6 of the largest force of the structure (which must itself be > 1e-2 eV/Å, so
the check cannot pass on vanishing forces).
"""

from __future__ import annotations

import math

import pytest
import torch
from test_model_forces import _coordinates, _finite_difference_forces
from test_model_structures import (  # noqa: F401  (single_thread: autouse fixture)
    build_structure,
    graph_of,
    single_thread,
    tiny_config,
)
from test_model_symmetry import SYMMETRY_TOL, _symmetry_errors

from equimol.models import build_model
from equimol.models.config import ModelConfig
from equimol.nn.linear import irreps_blocks, natural_irreps
from equimol.nn.readout import EnergyReadout
from equimol.nn.species_linear import SpeciesLinear

MACE_STYLE = {
    "interaction": "product_basis",
    "lmax": 1,
    "sh_lmax": 3,
    "message_lmax": 3,
    "self_connection": "species",
    "readout": "per_layer",
    "spe": {"enabled": False},
}


def _model(**overrides):
    return build_model(tiny_config(**{**MACE_STYLE, **overrides})).eval()


@pytest.mark.parametrize(
    ("backend", "many_body"), [("cg", "cg"), ("gaunt", "gaunt"), ("cp", "cg"), ("gaunt", "cg"), ("cg", "gaunt")]
)
def test_product_basis_model_is_symmetric(backend, many_body, shared_data):
    options = {"cp_rank": "exact"} if backend == "cp" else {}
    model = _model(tp_backend=backend, tp_options=options, many_body=many_body, correlation=3)
    for name in ("3bpa", "cu_fcc"):
        errors = _symmetry_errors(model, graph_of(build_structure(name, shared_data)))
        assert max(errors.values()) <= SYMMETRY_TOL, f"{backend}/{many_body}/{name}: {errors}"


@pytest.mark.parametrize("many_body", ["cg", "gaunt"])
def test_product_basis_forces_match_finite_differences(many_body, shared_data):
    model = _model(many_body=many_body, correlation=3)
    graph = graph_of(build_structure("3bpa", shared_data))
    forces = model(graph)["forces"].detach()
    scale = float(forces.abs().max())
    assert scale > 1e-2
    coordinates = _coordinates(graph.num_nodes, count=8)
    reference = _finite_difference_forces(model, graph, coordinates)
    computed = torch.stack([forces[atom, axis] for atom, axis in coordinates])
    assert (computed - reference).abs().max() <= 1e-6 * scale


def test_message_degrees_above_lmax_reach_the_energy(shared_data):
    """With message_lmax = 3 the l = 2, 3 messages feed the product; their weights must move the energy."""
    model = _model(many_body="cg", correlation=3)
    graph = graph_of(build_structure("3bpa", shared_data))
    energy = model(graph, compute_forces=False)["energy"]
    layer = model.interactions[0]
    high = [sl for (mul, ir), sl in zip(layer.message_irreps, layer.message_irreps.slices()) if ir.l >= 2]
    assert high, "message irreps should include l >= 2"
    with torch.no_grad():
        for weight, (_, ir) in zip(layer.linear_messages.weights, layer.message_irreps):
            if ir.l >= 2:
                weight.mul_(0.0)
    changed = model(graph, compute_forces=False)["energy"]
    assert (changed - energy).abs().max() > 1e-6


def test_species_linear_applies_each_element_its_own_map():
    torch.manual_seed(0)
    irreps = natural_irreps(3, 2)
    layer = SpeciesLinear(irreps, natural_irreps(5, 2), num_elements=4)
    x = torch.randn(7, irreps.dim, dtype=torch.float64)
    elements = torch.tensor([0, 3, 1, 1, 2, 0, 3])
    out = layer(x, elements)
    expected = []
    for node in range(7):
        blocks = irreps_blocks(x[node : node + 1], irreps)
        per_node = [
            torch.einsum("num,uv->nvm", block, weight[elements[node]]) / math.sqrt(3)
            for block, weight in zip(blocks, layer.weights)
        ]
        expected.append(torch.cat([b.reshape(1, -1) for b in per_node], dim=-1))
    torch.testing.assert_close(out, torch.cat(expected), rtol=0, atol=1e-13)
    swapped = layer(x, (elements + 1) % 4)
    assert (swapped - out).abs().max() > 1e-3


def test_per_layer_readout_adds_a_linear_head_per_earlier_layer():
    torch.manual_seed(0)
    ones = torch.ones(2, dtype=torch.float64)
    readout = EnergyReadout(4, 8, energy_scale=2 * ones, energy_shift=0 * ones, e0s=0 * ones, num_linear_heads=2)
    layers = [torch.randn(5, 4, dtype=torch.float64) for _ in range(3)]
    elements = torch.tensor([0, 1, 1, 0, 1])
    raw_last = readout.mlp(layers[-1]).squeeze(-1)
    heads = sum(head(s).squeeze(-1) for head, s in zip(readout.linear_heads, layers[:-1]))
    torch.testing.assert_close(readout(layers, elements), 2 * (raw_last + heads), rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="3 layers"):
        readout(layers[-1:], elements)


def test_per_layer_readout_receives_gradient_from_every_layer(shared_data):
    model = build_model(tiny_config(**MACE_STYLE, many_body="cg", correlation=2)).train()
    graph = graph_of(build_structure("3bpa", shared_data))
    model(graph, compute_forces=False)["energy"].sum().backward()
    (head,) = model.readout.linear_heads
    assert head.weight.grad is not None and head.weight.grad.abs().max() > 0


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"interaction": "gated", "message_lmax": 3}, "message_lmax"),
        ({"interaction": "product_basis", "many_body": "none"}, "many_body"),
        ({"interaction": "product_basis", "message_lmax": 0}, "message_lmax"),
        ({"interaction": "transformer"}, "interaction"),
        ({"self_connection": "per_atom"}, "self_connection"),
        ({"readout": "every"}, "readout"),
    ],
)
def test_model_options_are_validated(overrides, key):
    with pytest.raises(ValueError, match=key):
        ModelConfig.from_dict(tiny_config(**{**MACE_STYLE, "many_body": "cg", **overrides}))


def test_scalar_first_layer_is_cheaper_and_format_1_files_load_padded(shared_data, tmp_path):
    # Format-1 model files hold a first layer on zero-padded inputs and no scalar_first_layer key.
    from equimol.export import export_model, load_model

    scalar, padded = _model(correlation=2), _model(correlation=2, scalar_first_layer=False)
    assert scalar.interactions[0].input_irreps.lmax == 0 and padded.interactions[0].input_irreps.lmax == 1
    assert scalar.interactions[0].tensor_product.weight_numel < padded.interactions[0].tensor_product.weight_numel
    path = export_model(padded, tmp_path / "old.pt")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 1
    del payload["model_config"]["scalar_first_layer"]
    torch.save(payload, path)
    loaded = load_model(path)
    assert loaded.config.scalar_first_layer is False
    graph = graph_of(build_structure("3bpa", shared_data))
    assert torch.equal(loaded(graph)["energy"], padded(graph)["energy"])
    with pytest.raises(RuntimeError, match="size mismatch|Missing key|Unexpected key"):
        scalar.load_state_dict(padded.state_dict())
