"""The blocked, paired-grid ``grid`` strategy of ``gaunt`` (:mod:`equimol.tp.gaunt_grid`).

Float64 against the exact Gaunt reference to ``REFERENCE_TOL = 1e-10`` whatever the block size;
the recomputing first-order backward against the differentiable (``create_graph``) one; the
paired quadrature against orthonormality; rotation and inversion equivariance with one-sample blocks.
"""

import pytest
import torch
from harness import EQUIVARIANCE_TOL, REFERENCE_TOL, gaunt_reference, random_inputs, tp_equivariance_error

import equimol.tp.gaunt_grid as gaunt_grid
from equimol.tp import TensorProduct
from equimol.tp.sphere_grid import spherical_harmonics_on_grid


def irreps_case(lmax: int, channels: int) -> tuple[str, str, str]:
    features = " + ".join(f"{channels}x{l}{'eo'[l % 2]}" for l in range(lmax + 1))
    return features, " + ".join(f"{l}{'eo'[l % 2]}" for l in range(lmax + 1)), features


@pytest.mark.parametrize("block_elements", [1, 200, 1 << 19])
def test_any_block_size_matches_reference_and_gradients(monkeypatch, block_elements):
    irreps = irreps_case(3, channels=3)
    tp = TensorProduct(*irreps, backend="gaunt", strategy="grid", dtype=torch.float64)
    x1, x2, weight = (t.requires_grad_(True) for t in random_inputs(tp, 7, seed=3))
    expected = gaunt_reference(x1, x2, weight, *irreps)
    grad_out = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, (x1, x2, weight), grad_out)
    monkeypatch.setattr(gaunt_grid, "BLOCK_ELEMENTS", block_elements)
    out = tp(x1, x2, weight)
    assert (out - expected).abs().max().item() <= REFERENCE_TOL
    for got, want in zip(torch.autograd.grad(out, (x1, x2, weight), grad_out), expected_grads):
        assert (got - want).abs().max().item() <= REFERENCE_TOL


def test_recomputing_backward_equals_differentiable_backward(monkeypatch):
    monkeypatch.setattr(gaunt_grid, "BLOCK_ELEMENTS", 100)
    tp = TensorProduct(*irreps_case(2, channels=2), backend="gaunt", strategy="grid", dtype=torch.float64)
    x1, x2, weight = (t.requires_grad_(True) for t in random_inputs(tp, 9, seed=1))
    grad_out = torch.randn(9, tp.irreps_out.dim, dtype=torch.float64)
    plain = torch.autograd.grad(tp(x1, x2, weight), (x1, x2, weight), grad_out)
    graph = torch.autograd.grad(tp(x1, x2, weight), (x1, x2, weight), grad_out, create_graph=True)
    assert all(g.requires_grad for g in graph)
    for a, b in zip(plain, graph):
        assert (a - b).abs().max().item() <= REFERENCE_TOL


def test_gradient_of_x1_alone_skips_x2():
    tp = TensorProduct(*irreps_case(2, channels=2), backend="gaunt", strategy="grid", dtype=torch.float64)
    x1, x2, weight = random_inputs(tp, 4, seed=2)
    x1.requires_grad_(True)
    (grad,) = torch.autograd.grad(tp(x1, x2, weight).pow(2).sum(), x1)
    x1_ref = x1.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(gaunt_reference(x1_ref, x2, weight, *irreps_case(2, 2)).pow(2).sum(), x1_ref)
    assert (grad - expected).abs().max().item() <= REFERENCE_TOL


@pytest.mark.parametrize("total_degree", [3, 6, 9, 18])
def test_paired_grid_integrates_products_exactly(total_degree):
    theta_upper, phi, weights, theta_lower = gaunt_grid.paired_grid(total_degree)
    assert torch.allclose(theta_lower, torch.pi - theta_upper)
    lmax = total_degree // 2
    upper = spherical_harmonics_on_grid(lmax, theta_upper, phi).flatten(1)
    lower = spherical_harmonics_on_grid(lmax, theta_lower, phi).flatten(1)
    gram = (upper * weights) @ upper.T + (lower * weights) @ lower.T
    assert (gram - torch.eye(gram.shape[0], dtype=torch.float64)).abs().max().item() <= 1e-12
    signs = gaunt_grid.mirror_signs(upper, lower)
    assert (lower - signs[:, None] * upper).abs().max().item() <= 1e-12
    assert set(signs.tolist()) == {-1.0, 1.0}


def test_mirror_signs_refuse_a_row_of_no_parity():
    upper = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    with pytest.raises(RuntimeError, match="neither even nor odd"):
        gaunt_grid.mirror_signs(upper, torch.tensor([[1.0, -2.0]], dtype=torch.float64))


def test_equivariant_with_one_sample_blocks(monkeypatch):
    monkeypatch.setattr(gaunt_grid, "BLOCK_ELEMENTS", 1)
    tp = TensorProduct(*irreps_case(4, channels=2), backend="gaunt", strategy="grid", dtype=torch.float64)
    assert tp_equivariance_error(tp, count=5, rotations=3) <= EQUIVARIANCE_TOL
