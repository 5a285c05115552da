"""The sphere conversions behind the ``gaunt`` backend: SH <-> 2D Fourier grids and SH <-> quadrature grids.

Tolerance 1e-12 max abs in float64: every conversion is exact up to round-off (about 1e-15 at L = 8).
"""

import math

import pytest
import torch
from e3nn import o3

from equimol.tp.sphere_fourier import (
    fast_fft_size,
    fourier_factors,
    fourier_projection,
    torus_fourier_coefficients,
)
from equimol.tp.sphere_grid import grid_factors, product_grid_size, spherical_harmonics_on_grid
from equimol.utils.dtype import float64_construction

TOL = 1e-12


def random_coefficients(lmax: int, count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, (lmax + 1) ** 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("lmax", [1, 4, 8])
def test_fourier_coefficients_reproduce_e3nn_and_touch_only_plus_minus_m(lmax):
    coefficients = torus_fourier_coefficients(lmax)  # [D, u, v]
    generator = torch.Generator().manual_seed(lmax)
    theta = torch.rand(7, generator=generator, dtype=torch.float64) * 2 * math.pi
    phi = torch.rand(5, generator=generator, dtype=torch.float64) * 2 * math.pi
    frequencies = torch.arange(-lmax, lmax + 1, dtype=torch.float64)
    phase_theta = torch.exp(1j * frequencies[None, :] * theta[:, None])  # [T, u]
    phase_phi = torch.exp(1j * frequencies[None, :] * phi[:, None])  # [P, v]
    series = torch.einsum("duv,tu,pv->dtp", coefficients, phase_theta, phase_phi)
    expected = spherical_harmonics_on_grid(lmax, theta, phi)
    assert (series.real - expected).abs().max().item() <= TOL
    assert series.imag.abs().max().item() <= TOL
    for l in range(lmax + 1):
        for m in range(-l, l + 1):
            outside = coefficients[l * l + l + m].clone()
            outside[:, [lmax + abs(m), lmax - abs(m)]] = 0
            assert outside.abs().max().item() <= TOL, (l, m)


def test_sphere_directions_follow_e3nn_axes():
    """``Y_1`` is ``sqrt(3 / 4pi) (x, y, z)`` in e3nn; on the grid ``theta = 0`` is the ``+y`` axis."""
    values = spherical_harmonics_on_grid(1, torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    with float64_construction():
        expected = o3.spherical_harmonics(1, torch.tensor([0.0, 1.0, 0.0]), normalize=True, normalization="integral")
    assert (values[1:, 0, 0] - expected).abs().max().item() <= TOL


@pytest.mark.parametrize("lmax", [0, 3, 8])
def test_fourier_round_trip_is_identity(lmax):
    s_theta, s_phi = fast_fft_size(2 * lmax + 1), fast_fft_size(2 * lmax + 1)
    factors, projection = fourier_factors(lmax, s_theta), fourier_projection(lmax, s_theta)
    a = random_coefficients(lmax, 3, seed=lmax)
    slots = torch.cat([a, a.new_zeros(3, 1)], dim=1)[:, factors.index]  # [N, V, K]
    rows = torch.einsum("nvk,vkx->nvx", slots, factors.matrix).unflatten(-1, (s_theta, 2))
    values = torch.fft.hfftn(torch.view_as_complex(rows.contiguous()), s=(s_theta, s_phi), dim=(-1, -2))
    grid = torch.fft.ihfftn(values, s=(s_theta, s_phi), dim=(-1, -2))[:, : lmax + 1]
    back = torch.einsum("nvx,vxk->nvk", torch.view_as_real(grid).flatten(-2), projection.matrix)
    recovered = torch.zeros(3, (lmax + 1) ** 2 + 1, dtype=torch.float64)
    recovered[:, projection.index.flatten()] = back.flatten(1)
    assert (recovered[:, :-1] - a).abs().max().item() <= TOL


@pytest.mark.parametrize("lmax", [0, 3, 8])
def test_grid_round_trip_is_identity(lmax):
    n_theta, n_phi = product_grid_size(2 * lmax)
    factors = grid_factors(lmax, n_theta, n_phi)
    a = random_coefficients(lmax, 3, seed=lmax + 1)
    slots = torch.cat([a, a.new_zeros(3, 1)], dim=1)[:, factors.index]  # [N, M, K]
    values = torch.einsum("nmk,mkt,mp->ntp", slots, factors.synthesis_theta, factors.synthesis_phi)
    back = torch.einsum("ntp,pm,mtk->nmk", values, factors.analysis_phi, factors.analysis_theta)
    recovered = torch.zeros(3, (lmax + 1) ** 2 + 1, dtype=torch.float64)
    recovered[:, factors.index.flatten()] = back.flatten(1)
    assert (recovered[:, :-1] - a).abs().max().item() <= TOL


def test_fast_fft_sizes_and_too_small_grids():
    assert [fast_fft_size(n) for n in (1, 7, 11, 13, 17, 33, 49)] == [1, 8, 12, 15, 18, 36, 50]
    with pytest.raises(ValueError, match="s_theta=8 cannot hold the polar frequencies of degree 4"):
        fourier_factors(4, 8)
