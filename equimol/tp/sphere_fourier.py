r"""Real spherical harmonics as 2D Fourier series on the torus ``(theta, phi) in [0, 2 pi)^2``, and back.

With the direction map of :mod:`equimol.tp.sphere_grid` extended to all ``theta``, every harmonic of
degree ``l`` and order ``m`` is a trigonometric polynomial

.. math:: Y_{lm}(\theta, \phi) = \sum_{|u| \le l} \sum_{v = \pm |m|} F_{lm}[u, v]\, e^{i (u \theta + v \phi)},

so a function ``f = sum_c a_c Y_c`` of degree ``L`` has a ``(2L + 1) x (2L + 1)`` coefficient grid,
and ``Y_lm`` touches only the two columns ``v = +-|m|``: the conversion costs O(L^3). The
coefficients ``F`` are computed from e3nn's harmonics by an exact discrete Fourier transform.

Real functions have Hermitian grids (``F[-u, -v] = conj F[u, v]``); only the columns ``v >= 0`` are
stored, in FFT order along ``u`` (``u`` at position ``u mod S``), which is the input layout of
``torch.fft.hfftn`` over ``(u, v)`` with ``v`` the half-Hermitian dimension.

**Back to harmonics.** For ``h = sum H[u, v] e^{i(u theta + v phi)}``

.. math:: \int h\, Y_c\, d\Omega = \sum_{u, v} H[u, v] K_c[u, v], \qquad
          K_c[u, v] = 2\pi \sum_{u'} F_c[u', -v]\, W(u + u'),

          W(k) = \int_0^\pi e^{i k \theta} \sin\theta\, d\theta,

with ``W(k) = (1 + (-1)^k) / (1 - k^2)`` and ``W(+-1) = +-i pi / 2``. Only ``v = +-|m|`` contribute and
the two are complex conjugates, so ``int h Y_c = f_m Re sum_u H[u, |m|] K_c[u, |m|]`` with
``f_0 = 1`` and ``f_m = 2`` otherwise. ``theta`` is not orthogonal on ``[0, pi]``, so every ``u`` of
``H`` enters.

**Slot layout.** Both conversions work on a "v-major" layout ``[L + 1, 2 (L + 1)]``: row ``v = |m|``,
column ``2 l`` for ``m = +v`` and ``2 l + 1`` for ``m = -v`` (empty when ``l < v`` or for ``m = -0``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from equimol.tp.sphere_grid import spherical_harmonics_on_grid


def fast_fft_size(minimum: int) -> int:
    """Smallest integer ``>= minimum`` whose prime factors are 2, 3 and 5 (fast for pocketfft and cuFFT)."""
    size = max(1, minimum)
    while True:
        rest = size
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return size
        size += 1


def product_fft_size(degree1: int, degree2: int, degree_out: int) -> tuple[int, int]:
    """FFT sizes ``(S_theta, S_phi)`` for the product of degrees ``degree1`` and ``degree2`` read up to ``degree_out``.

    ``S_theta >= 2 (l1 + l2) + 1`` keeps every polar frequency of the product (all enter the
    projection); ``S_phi > l1 + l2 + l_out`` keeps the azimuthal frequencies ``0..l_out`` free of
    aliases and ``S_phi >= 2 max(l1, l2) + 1`` lets the one-sided grids hold each factor.
    """
    s_theta = fast_fft_size(2 * (degree1 + degree2) + 1)
    s_phi = fast_fft_size(max(degree1 + degree2 + degree_out + 1, 2 * max(degree1, degree2) + 1))
    return s_theta, s_phi


def v_major_index(lmax: int) -> torch.Tensor:
    """``[lmax + 1, 2 (lmax + 1)]`` canonical index of each v-major slot; ``(lmax + 1)^2`` for empty slots."""
    index = torch.full((lmax + 1, 2 * (lmax + 1)), (lmax + 1) ** 2, dtype=torch.long)
    for l in range(lmax + 1):
        for m in range(-l, l + 1):
            index[abs(m), 2 * l + (m < 0)] = l * l + l + m
    return index


@functools.lru_cache(maxsize=16)
def torus_fourier_coefficients(lmax: int) -> torch.Tensor:
    """``F_c[u, v]`` for ``u, v = -lmax..lmax``, ``[(lmax + 1)^2, 2 lmax + 1, 2 lmax + 1]`` complex128.

    Exact up to round-off: ``2 lmax + 2`` uniform samples per angle resolve frequencies ``<= lmax``.
    """
    samples = 2 * lmax + 2
    angles = torch.arange(samples, dtype=torch.float64) * (2 * math.pi / samples)
    values = spherical_harmonics_on_grid(lmax, angles, angles)  # [D, S, S], theta then phi
    coefficients = torch.fft.fft2(values) / samples**2
    frequencies = torch.arange(-lmax, lmax + 1) % samples
    return coefficients[:, frequencies][:, :, frequencies].contiguous()


def _signed_frequencies(size: int) -> torch.Tensor:
    """Signed frequency of each FFT-ordered position ``0..size - 1``."""
    positions = torch.arange(size)
    return torch.where(positions <= (size - 1) // 2, positions, positions - size)


@dataclass(frozen=True)
class FourierFactors:
    """SH -> one-sided Fourier grid of degrees ``0..lmax`` for an FFT of ``s_theta`` polar points.

    Attributes:
        index: ``[L + 1, 2 (L + 1)]`` v-major slot -> canonical component (:func:`v_major_index`).
        matrix: ``[L + 1, 2 (L + 1), 2 s_theta]``, real: ``F_c[u, v]`` at FFT position of ``u``, real
            and imaginary parts interleaved, so ``(a_slots @ matrix).view(..., s_theta, 2)`` is the
            grid ``F[u, v]`` of ``f = sum_c a_c Y_c`` row ``v`` by row ``v``.
    """

    index: torch.Tensor
    matrix: torch.Tensor


@functools.lru_cache(maxsize=64)
def fourier_factors(lmax: int, s_theta: int) -> FourierFactors:
    """Float64 CPU :class:`FourierFactors` (cached per ``(lmax, s_theta)``); needs ``s_theta >= 2 lmax + 1``."""
    if s_theta < 2 * lmax + 1:
        raise ValueError(f"s_theta={s_theta} cannot hold the polar frequencies of degree {lmax}")
    coefficients = torus_fourier_coefficients(lmax)  # [D, u, v]
    index = v_major_index(lmax)
    matrix = torch.zeros(lmax + 1, 2 * (lmax + 1), s_theta, dtype=torch.complex128)
    positions = torch.arange(-lmax, lmax + 1) % s_theta
    for v in range(lmax + 1):
        for k in range(2 * (lmax + 1)):
            component = int(index[v, k])
            if component < (lmax + 1) ** 2:
                matrix[v, k, positions] = coefficients[component, :, lmax + v]
    return FourierFactors(index=index, matrix=torch.view_as_real(matrix).reshape(lmax + 1, 2 * (lmax + 1), -1))


def _polar_sine_moments(frequencies: torch.Tensor) -> torch.Tensor:
    """``W(k) = int_0^pi exp(i k theta) sin(theta) dtheta`` for integer ``k``, complex128."""
    k = frequencies.to(torch.float64)
    even = (frequencies % 2 == 0).to(torch.float64)
    real = torch.where(frequencies.abs() == 1, torch.zeros_like(k), 2 * even / (1 - k * k).where(k.abs() != 1, 1.0))
    imaginary = torch.where(frequencies.abs() == 1, k * math.pi / 2, torch.zeros_like(k))
    return torch.complex(real, imaginary)


@dataclass(frozen=True)
class FourierProjection:
    """One-sided Fourier grid -> orthonormal SH coefficients of degrees ``0..lmax``.

    Attributes:
        index: ``[L + 1, 2 (L + 1)]`` v-major slot -> canonical component.
        matrix: ``[L + 1, 2 s_theta, 2 (L + 1)]``, real: for the rows ``H[:, v]`` of a grid (FFT order
            in ``u``, real and imaginary parts interleaved), ``H_row_v @ matrix[v]`` gives
            ``int h Y_c dOmega`` in slot ``(v, k)``.
    """

    index: torch.Tensor
    matrix: torch.Tensor


@functools.lru_cache(maxsize=64)
def fourier_projection(lmax: int, s_theta: int) -> FourierProjection:
    """Float64 CPU :class:`FourierProjection` (cached per ``(lmax, s_theta)``)."""
    coefficients = torus_fourier_coefficients(lmax)  # [D, u', v'], u', v' = -L..L
    index = v_major_index(lmax)
    u = _signed_frequencies(s_theta)
    u_prime = torch.arange(-lmax, lmax + 1)
    moments = _polar_sine_moments(u[:, None] + u_prime[None, :])  # [S, 2L+1]
    matrix = torch.zeros(lmax + 1, s_theta, 2 * (lmax + 1), dtype=torch.complex128)
    for v in range(lmax + 1):
        factor = 1.0 if v == 0 else 2.0
        for k in range(2 * (lmax + 1)):
            component = int(index[v, k])
            if component < (lmax + 1) ** 2:
                kernel = 2 * math.pi * moments @ coefficients[component, :, lmax - v]  # [S]
                matrix[v, :, k] = factor * kernel
    # Re(H K) = Re H Re K - Im H Im K: interleave (Re K, -Im K) along u.
    real_matrix = torch.stack([matrix.real, -matrix.imag], dim=2).reshape(lmax + 1, 2 * s_theta, -1)
    return FourierProjection(index=index, matrix=real_matrix.contiguous())


def for_forward_transform(matrix: torch.Tensor, s_theta: int, s_phi: int) -> torch.Tensor:
    """Adapt a :class:`FourierProjection` matrix to grids taken with ``rfftn`` instead of ``ihfftn``.

    ``ihfftn(h) = conj(rfftn(h)) / (s_theta s_phi)``, and ``rfftn`` is about 2.5x faster on a CPU
    (pocketfft, measured on 32000 grids of 18 x 15): conjugate (negate the imaginary rows) and scale.
    """
    adapted = matrix.clone()
    adapted[:, 1::2, :] *= -1
    return adapted / (s_theta * s_phi)
