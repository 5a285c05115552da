"""Unit tests of the building blocks: radial functions, species handling, equivariance of every layer.

Equivariance tolerance: ``harness.EQUIVARIANCE_TOL`` (1e-10, float64, order-one inputs), the
harness's bound for exact operations; the layers here are exact (no decomposition).
"""

from __future__ import annotations

import math

import pytest
import torch
from e3nn import o3
from harness import EQUIVARIANCE_TOL, equivariance_error, random_orthogonal_matrices
from test_model_structures import single_thread  # noqa: F401  (autouse fixture)

from equimol.manybody.cg import SymmetricProduct
from equimol.nn import (
    BesselBasis,
    EquivariantLinear,
    Gate,
    InteractionBlock,
    PolynomialEnvelope,
    SpeciesIndex,
    natural_irreps,
    parse_species,
)
from equimol.tp import available_backends

MATRICES = random_orthogonal_matrices(2, seed=21)


def test_envelope_is_c2_at_the_cutoff_and_zero_beyond():
    envelope = PolynomialEnvelope(4.0, exponent=5)
    r = torch.tensor([0.0, 2.0, 4.0, 4.5], dtype=torch.float64, requires_grad=True)
    u = envelope(r)
    (first,) = torch.autograd.grad(u.sum(), r, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), r)
    assert u[0].item() == 1.0 and u[2].item() == 0.0 and u[3].item() == 0.0
    # u(1) = u'(1) = u''(1) = 0 exactly for the polynomial; rounding of the coefficients only.
    assert abs(first[2].item()) < 1e-12 and abs(second[2].item()) < 1e-12
    assert first[3].item() == 0.0 and second[3].item() == 0.0
    assert 0 < u[1].item() < 1


def test_bessel_basis_values_and_finite_origin():
    basis = BesselBasis(5.0, num_basis=4)
    r = torch.tensor([0.0, 1.3, 5.0], dtype=torch.float64)
    values = basis(r)
    n = torch.arange(1, 5, dtype=torch.float64)
    expected_origin = math.sqrt(2 / 5.0) * n * math.pi / 5.0
    assert torch.allclose(values[0], expected_origin, rtol=1e-14, atol=0)
    assert torch.allclose(values[1], math.sqrt(2 / 5.0) * torch.sin(n * math.pi * 1.3 / 5.0) / 1.3, rtol=1e-13)
    assert values[2].abs().max() < 1e-15


def test_radial_bad_arguments():
    with pytest.raises(ValueError, match="envelope_exponent"):
        PolynomialEnvelope(4.0, exponent=1)
    with pytest.raises(ValueError, match="radial_cutoff"):
        PolynomialEnvelope(0.0)
    with pytest.raises(ValueError, match="num_radial_basis"):
        BesselBasis(4.0, num_basis=0)


def test_species_parsing_and_index():
    assert parse_species(["H", 6, "O"]) == [1, 6, 8]
    index = SpeciesIndex([1, 6, 8])
    assert index(torch.tensor([8, 1, 6, 6])).tolist() == [2, 0, 1, 1]
    with pytest.raises(ValueError, match=r"\[7, 200\] are not among the model's species \[1, 6, 8\]"):
        index(torch.tensor([1, 7, 200]))
    with pytest.raises(ValueError, match="non-empty list"):
        parse_species([])


def test_linear_and_gate_are_equivariant():
    irreps = natural_irreps(3, 2)
    gate = Gate(3, 2)
    linear = EquivariantLinear(irreps, gate.irreps_in, bias=True)
    x = torch.randn(5, irreps.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert equivariance_error(linear, [irreps], gate.irreps_in, [x], MATRICES) < EQUIVARIANCE_TOL
    y = linear(x)
    assert equivariance_error(gate, [gate.irreps_in], gate.irreps_out, [y], MATRICES) < EQUIVARIANCE_TOL
    with pytest.raises(ValueError, match="absent from irreps_in"):
        EquivariantLinear("2x0e", "2x0e + 2x1o")


def test_symmetric_product_is_equivariant():
    irreps = natural_irreps(3, 2)
    product = SymmetricProduct(3, 2, correlation=3, num_elements=2)
    x = torch.randn(6, irreps.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    elements = torch.tensor([0, 1, 1, 0, 1, 0])
    error = equivariance_error(lambda v: product(v, elements), [irreps], irreps, [x], MATRICES)
    assert error < EQUIVARIANCE_TOL
    # correlation 3 is a cubic polynomial: doubling x multiplies its degree-3 part by 8
    assert not torch.allclose(product(2 * x, elements), 2 * product(x, elements))


@pytest.mark.parametrize("backend", available_backends())
def test_interaction_block_is_equivariant(backend):
    torch.manual_seed(0)
    options = {"cp_rank": "exact"} if backend == "cp" else {}
    block = InteractionBlock(3, 2, 2, 4, [8], 3.0, tp_backend=backend, tp_options=options)
    generator = torch.Generator().manual_seed(2)
    num_nodes, num_edges = 4, 9
    x = torch.randn(num_nodes, block.irreps.dim, dtype=torch.float64, generator=generator)
    vectors = torch.randn(num_edges, 3, dtype=torch.float64, generator=generator)
    sender = torch.randint(0, num_nodes, (num_edges,), generator=generator)
    receiver = torch.randint(0, num_nodes, (num_edges,), generator=generator)
    lengths = vectors.norm(dim=-1)
    basis = BesselBasis(3.0, 4)(lengths)
    envelope = PolynomialEnvelope(3.0)(lengths)
    sh_irreps = o3.Irreps.spherical_harmonics(2)

    def run(features, edge_sh):
        return block(features, edge_sh, basis, envelope, sender, receiver)

    edge_sh = o3.spherical_harmonics(sh_irreps, vectors, normalize=True, normalization="component")
    error = equivariance_error(run, [block.irreps, sh_irreps], block.irreps, [x, edge_sh], MATRICES)
    assert error < EQUIVARIANCE_TOL
