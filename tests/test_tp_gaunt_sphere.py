"""The sphere conversions behind the ``gaunt`` backend: SH <-> quadrature grids.

Tolerance 1e-12 max abs in float64: every conversion is exact up to round-off (about 1e-15 at L = 8).
"""

import pytest
import torch
from e3nn import o3

from equimol.tp.sphere_grid import grid_factors, product_grid_size, spherical_harmonics_on_grid
from equimol.utils.dtype import float64_construction

TOL = 1e-12


def random_coefficients(lmax: int, count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, (lmax + 1) ** 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_sphere_directions_follow_e3nn_axes():
    """``Y_1`` is ``sqrt(3 / 4pi) (x, y, z)`` in e3nn; on the grid ``theta = 0`` is the ``+y`` axis."""
    values = spherical_harmonics_on_grid(1, torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    with float64_construction():
        expected = o3.spherical_harmonics(1, torch.tensor([0.0, 1.0, 0.0]), normalize=True, normalization="integral")
    assert (values[1:, 0, 0] - expected).abs().max().item() <= TOL


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
