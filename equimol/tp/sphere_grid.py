r"""Real spherical harmonics on a (theta, phi) product grid, separated into polar and azimuthal factors.

Directions use e3nn's axis convention (``y`` is the polar axis):

.. math:: s(\theta, \phi) = (\sin\theta \sin\phi,\ \cos\theta,\ \sin\theta \cos\phi).

e3nn's real spherical harmonic of degree ``l`` and component ``m = -l..l`` (canonical index
``l^2 + l + m`` when the degrees ``0..L`` are concatenated) factorizes as

.. math:: Y_{lm}(\theta, \phi) = \Theta_{lm}(\theta)\, \Phi_m(\phi), \qquad
          \Phi_m = \cos(m \phi)\ (m > 0),\quad 1\ (m = 0),\quad \sin(|m| \phi)\ (m < 0).

``Theta`` is read off e3nn's harmonics numerically (projection onto ``Phi_m`` with an exact
uniform rule), so every constant comes from e3nn itself; the factorization is checked to 1e-12.

**Quadrature.** Gauss-Legendre nodes in ``cos(theta)`` (``n_theta`` points, exact for polynomials
of degree ``2 n_theta - 1``) times ``n_phi`` uniform nodes in ``phi`` (exact for frequencies below
``n_phi``) integrate every spherical polynomial of degree ``<= min(2 n_theta - 1, n_phi - 1)``
exactly. :func:`product_grid_size` returns the smallest such grid for a product of degrees.

**Slot layout.** Synthesis and analysis work on an "m-major" layout ``[2L + 1, L + 1]``: row
``m + L``, column ``l``; slots with ``l < |m|`` are empty. :func:`m_major_index` maps slots to
canonical components, empty slots to the padding index ``(L + 1)^2``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from e3nn import o3

from equimol.utils.dtype import float64_construction

#: Max abs residual accepted when checking ``Y = Theta Phi`` against e3nn (float64 round-off is ~1e-15).
FACTORIZATION_TOL = 1e-12


def torus_directions(theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Unit vectors ``s(theta, phi)`` ``[T, P, 3]`` for ``theta`` ``[T]`` and ``phi`` ``[P]`` (any real angles)."""
    theta, phi = theta[:, None], phi[None, :]
    return torch.stack(
        torch.broadcast_tensors(theta.sin() * phi.sin(), theta.cos(), theta.sin() * phi.cos()),
        dim=-1,
    )


def spherical_harmonics_on_grid(lmax: int, theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Orthonormal real harmonics ``Y_c(theta_t, phi_p)``, ``[(lmax + 1)^2, T, P]``, float64.

    Orthonormal means ``\\int Y_c Y_c' dOmega = delta`` (e3nn ``normalization="integral"``).
    """
    directions = torus_directions(theta.to(torch.float64), phi.to(torch.float64))
    with float64_construction():
        values = o3.spherical_harmonics(list(range(lmax + 1)), directions, normalize=True, normalization="integral")
    return values.permute(2, 0, 1).contiguous()


def azimuthal_basis(lmax: int, phi: torch.Tensor) -> torch.Tensor:
    """``Phi_m(phi_p)`` for ``m = -lmax..lmax``, ``[2 lmax + 1, P]``, float64."""
    m = torch.arange(-lmax, lmax + 1, dtype=torch.float64)[:, None]
    phi = phi.to(torch.float64)[None, :]
    return torch.where(m > 0, torch.cos(m * phi), torch.where(m < 0, torch.sin(-m * phi), torch.ones_like(m * phi)))


def degree_and_order(lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Degree ``l`` and order ``m`` of every canonical component ``0..(lmax + 1)^2 - 1``."""
    degrees = torch.cat([torch.full((2 * l + 1,), l) for l in range(lmax + 1)])
    orders = torch.cat([torch.arange(-l, l + 1) for l in range(lmax + 1)])
    return degrees, orders


def m_major_index(lmax: int) -> torch.Tensor:
    """``[2 lmax + 1, lmax + 1]`` canonical index of slot ``(m + lmax, l)``; ``(lmax + 1)^2`` if ``l < |m|``."""
    index = torch.full((2 * lmax + 1, lmax + 1), (lmax + 1) ** 2, dtype=torch.long)
    for l in range(lmax + 1):
        for m in range(-l, l + 1):
            index[m + lmax, l] = l * l + l + m
    return index


def polar_factors(lmax: int, theta: torch.Tensor) -> torch.Tensor:
    """``Theta_lm(theta_t)`` in the m-major layout, ``[2 lmax + 1, lmax + 1, T]`` (zero in empty slots).

    Raises:
        RuntimeError: if e3nn's harmonics do not factorize as documented (a convention change).
    """
    n_phi = 2 * lmax + 2  # exact for the products Phi_m Phi_m' of frequency <= 2 lmax
    phi = torch.arange(n_phi, dtype=torch.float64) * (2 * math.pi / n_phi)
    values = spherical_harmonics_on_grid(lmax, theta, phi)  # [D, T, P]
    basis = azimuthal_basis(lmax, phi)  # [2L+1, P]
    _, orders = degree_and_order(lmax)
    own_basis = basis[orders + lmax]  # [D, P]
    norm = own_basis.pow(2).sum(-1)  # n_phi for m = 0, n_phi / 2 otherwise
    theta_part = torch.einsum("dtp,dp->dt", values, own_basis) / norm[:, None]
    residual = (theta_part[:, :, None] * own_basis[:, None, :] - values).abs().max().item()
    if residual > FACTORIZATION_TOL:
        raise RuntimeError(
            f"e3nn's real spherical harmonics do not factorize as Theta_lm(theta) Phi_m(phi) (residual {residual:.2e})"
        )
    padded = torch.cat([theta_part, theta_part.new_zeros(1, theta_part.shape[1])])
    return padded[m_major_index(lmax)]


def gauss_legendre_polar(n_theta: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Polar angles ``theta_t = arccos(x_t)`` of the ``n_theta`` Gauss-Legendre nodes and their weights (sum 2)."""
    nodes, weights = np.polynomial.legendre.leggauss(n_theta)
    return torch.from_numpy(np.arccos(nodes)), torch.from_numpy(weights)


def product_grid_size(total_degree: int) -> tuple[int, int]:
    """Smallest ``(n_theta, n_phi)`` integrating spherical polynomials of degree ``total_degree`` exactly."""
    return total_degree // 2 + 1, total_degree + 1


@dataclass(frozen=True)
class GridFactors:
    """Synthesis and analysis matrices of degrees ``0..lmax`` on one Gauss-Legendre x uniform grid.

    Attributes:
        index: ``[2L + 1, L + 1]`` m-major slot -> canonical component (see :func:`m_major_index`).
        synthesis_theta: ``[2L + 1, L + 1, T]``, ``Theta_lm(theta_t)``.
        synthesis_phi: ``[2L + 1, P]``, ``Phi_m(phi_p)``.
        analysis_phi: ``[P, 2L + 1]``, ``(2 pi / P) Phi_m(phi_p)``.
        analysis_theta: ``[2L + 1, T, L + 1]``, ``w_t Theta_lm(theta_t)`` (Gauss-Legendre weights).

    ``f(theta_t, phi_p) = sum_m (sum_l a_lm S_theta[m, l, t]) S_phi[m, p]`` evaluates a function with
    coefficients ``a``; ``a_lm = sum_t A_theta[m, t, l] sum_p h(t, p) A_phi[p, m]`` projects ``h``
    onto the orthonormal harmonics, exactly when ``h Y_lm`` is within the grid's exact degree.
    """

    index: torch.Tensor
    synthesis_theta: torch.Tensor
    synthesis_phi: torch.Tensor
    analysis_phi: torch.Tensor
    analysis_theta: torch.Tensor


@functools.lru_cache(maxsize=64)
def grid_factors(lmax: int, n_theta: int, n_phi: int) -> GridFactors:
    """Float64 CPU :class:`GridFactors` for degrees ``0..lmax`` on an ``n_theta x n_phi`` grid (cached)."""
    theta, theta_weights = gauss_legendre_polar(n_theta)
    phi = torch.arange(n_phi, dtype=torch.float64) * (2 * math.pi / n_phi)
    polar = polar_factors(lmax, theta)  # [M, K, T]
    azimuthal = azimuthal_basis(lmax, phi)  # [M, P]
    return GridFactors(
        index=m_major_index(lmax),
        synthesis_theta=polar.contiguous(),
        synthesis_phi=azimuthal.contiguous(),
        analysis_phi=(azimuthal.T * (2 * math.pi / n_phi)).contiguous(),
        analysis_theta=(polar * theta_weights[None, None, :]).transpose(1, 2).contiguous(),
    )


def synthesize_on_grid(slots: torch.Tensor, theta_matrix: torch.Tensor, phi_matrix: torch.Tensor) -> torch.Tensor:
    """Feature-major m-major slots ``[(2L + 1) (L + 1), B]`` -> grid values ``[P * T, B]`` (``phi`` outer).

    ``theta_matrix`` is ``synthesis_theta.transpose(1, 2)`` ``[2L + 1, T, L + 1]`` and ``phi_matrix``
    is ``synthesis_phi.T`` ``[P, 2L + 1]``: two GEMMs with ``B`` columns, O(L^3) per column.
    """
    orders, columns = theta_matrix.shape[0], slots.shape[1]
    polar = torch.bmm(theta_matrix, slots.view(orders, -1, columns))  # [M, T, B]
    return torch.mm(phi_matrix, polar.view(orders, -1)).view(-1, columns)


def analyze_on_grid(values: torch.Tensor, phi_matrix: torch.Tensor, theta_matrix: torch.Tensor) -> torch.Tensor:
    """Grid values ``[P * T, B]`` -> feature-major m-major slots ``[(2L + 1) (L + 1), B]`` of ``int h Y dOmega``.

    ``phi_matrix`` is ``analysis_phi.T`` ``[2L + 1, P]`` and ``theta_matrix`` is
    ``analysis_theta.transpose(1, 2)`` ``[2L + 1, L + 1, T]``.
    """
    n_phi, columns = phi_matrix.shape[1], values.shape[1]
    azimuthal = torch.mm(phi_matrix, values.view(n_phi, -1))  # [M, T * B]
    slots = torch.bmm(theta_matrix, azimuthal.view(theta_matrix.shape[0], -1, columns))  # [M, K, B]
    return slots.view(-1, columns)


@functools.lru_cache(maxsize=16)
def real_gaunt_coefficients(lmax1: int, lmax2: int, lmax3: int) -> torch.Tensor:
    """``G[a, b, c] = int Y_a Y_b Y_c dOmega`` over canonical components, ``[(L1+1)^2, (L2+1)^2, (L3+1)^2]``, float64.

    Orthonormal real harmonics (e3nn ``normalization="integral"``); the Gauss-Legendre x uniform grid
    of :func:`product_grid_size` integrates the degree ``L1 + L2 + L3`` integrand exactly. Cached:
    callers clone before keeping it.
    """
    n_theta, n_phi = product_grid_size(lmax1 + lmax2 + lmax3)
    theta, theta_weights = gauss_legendre_polar(n_theta)
    phi = torch.arange(n_phi, dtype=torch.float64) * (2 * math.pi / n_phi)
    values = spherical_harmonics_on_grid(max(lmax1, lmax2, lmax3), theta, phi).flatten(1)  # [D, T * P]
    weights = (theta_weights[:, None] * (2 * math.pi / n_phi)).expand(n_theta, n_phi).flatten()
    y1, y2, y3 = (values[: (lmax + 1) ** 2] for lmax in (lmax1, lmax2, lmax3))
    return torch.einsum("ag,bg,cg->abc", y1 * weights, y2, y3)


@functools.lru_cache(maxsize=64)
def dense_grid_matrices(
    degrees_in1: tuple[int, ...], degrees_in2: tuple[int, ...], degrees_out: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Dense synthesis and analysis matrices of a product of two sphere functions (float64, cached).

    .. math:: S^{(1)}_{i g} = Y_i(s_g), \quad S^{(2)}_{j g} = Y_j(s_g), \quad A_{g k} = q_g\, Y_k(s_g)

    for the orthonormal harmonics ``Y`` of every component (irreps order, one copy of an irrep of
    each listed degree) at the ``G = T P`` points ``s_g`` (``theta`` outer) of the smallest product
    grid exact for degree ``l1_max + l2_max + l3_max`` (:func:`product_grid_size`), ``q_g`` its
    weights. Then ``sum_g A_gk (a S1)_g (b S2)_g = int f_a f_b Y_k dOmega`` exactly: the dense form
    of :func:`synthesize_on_grid` / :func:`analyze_on_grid`. Returns ``S1 [D1, G]``, ``S2 [D2, G]``,
    ``A [G, D_out]``.
    """
    n_theta, n_phi = product_grid_size(max(degrees_in1) + max(degrees_in2) + max(degrees_out))
    theta, theta_weights = gauss_legendre_polar(n_theta)
    phi = torch.arange(n_phi, dtype=torch.float64) * (2 * math.pi / n_phi)
    lmax = max(*degrees_in1, *degrees_in2, *degrees_out)
    harmonics = spherical_harmonics_on_grid(lmax, theta, phi).flatten(1)  # [(L + 1)^2, T * P]

    def rows(degrees: tuple[int, ...]) -> torch.Tensor:
        return harmonics[torch.cat([torch.arange(l * l, (l + 1) ** 2) for l in degrees])]

    weights = (theta_weights[:, None] * (2 * math.pi / n_phi)).expand(n_theta, n_phi).reshape(-1)
    return rows(degrees_in1), rows(degrees_in2), weights[:, None] * rows(degrees_out).T
