r"""The learnable spectral filters of SPE, shared by the ``exact`` and ``chebyshev`` modes.

Each of the ``m`` filters is a Chebyshev expansion of degree ``K`` in the rescaled eigenvalue:

.. math::

    \phi_l(\lambda) = \sum_{k=0}^{K} c_{lk}\, T_k(t), \qquad t = \frac{2 \lambda}{s} - 1,

with ``T_k`` the Chebyshev polynomials of the first kind and ``s`` a fixed spectral scale (Laplacian
weights are dimensionless). Because ``\phi_l`` is a polynomial, ``\phi_l(L)`` is the same matrix whether
it is evaluated through the eigendecomposition of ``L`` (``exact``) or with the three-term recurrence on
sparse products (``chebyshev``); the two modes differ only by rounding. ``s`` is fixed (not a
per-structure spectral bound) so the filter is local (``K`` hops) and size-extensive; eigenvalues above
``s`` are handled by the same polynomial, smoothly.

**Divided differences without cancellation** (for the derivatives of the matrix function). For a
polynomial ``g``, Opitz's formula gives the divided differences as entries of ``g`` applied to a
bidiagonal matrix:

.. math::

    g\!\begin{pmatrix} \lambda_a & 1 & 0 \\ 0 & \lambda_b & 1 \\ 0 & 0 & \lambda_c \end{pmatrix}
    = \begin{pmatrix} g(\lambda_a) & g[\lambda_a, \lambda_b] & g[\lambda_a, \lambda_b, \lambda_c] \\
      & g(\lambda_b) & g[\lambda_b, \lambda_c] \\ & & g(\lambda_c) \end{pmatrix}

Running the Chebyshev recurrence on that matrix yields every divided difference exactly, including
the coincident limits (``g'``, ``g''/2``) at degenerate eigenvalues: no quotient, no threshold.
"""

from __future__ import annotations

import torch


def chebyshev_values(t: torch.Tensor, degree: int) -> torch.Tensor:
    """``T_0(t) .. T_K(t)``, ``[K + 1, *t.shape]``."""
    values = [torch.ones_like(t)]
    if degree >= 1:
        values.append(t)
    for _ in range(2, degree + 1):
        values.append(2 * t * values[-1] - values[-2])
    return torch.stack(values[: degree + 1])


def divided_differences(eigenvalues: torch.Tensor, degree: int, spectral_scale: float) -> torch.Tensor:
    r"""First divided differences ``g_k[\lambda_a, \lambda_b]`` of ``g_k(\lambda) = T_k(2\lambda/s - 1)``.

    From the recurrence on the 2x2 Opitz matrix: with ``sigma = 2 / s``,
    ``e^{k+1}_{ab} = 2 (t_a e^k_{ab} + sigma T_k(t_b)) - e^{k-1}_{ab}``, ``e^0 = 0``, ``e^1 = sigma``.

    Args:
        eigenvalues: ``[n]``.
        degree: ``K``.
        spectral_scale: ``s``.

    Returns:
        ``[K + 1, n, n]``, symmetric in the last two indices (up to rounding); the diagonal is ``g_k'``.
    """
    t = 2.0 * eigenvalues / spectral_scale - 1.0
    sigma = 2.0 / spectral_scale
    values = chebyshev_values(t, degree)
    n = t.shape[0]
    previous = t.new_zeros(n, n)
    out = [previous]
    if degree >= 1:
        current = t.new_full((n, n), sigma)
        out.append(current)
        for k in range(1, degree):
            following = 2.0 * (t.unsqueeze(1) * current + sigma * values[k].unsqueeze(0)) - previous
            previous, current = current, following
            out.append(current)
    return torch.stack(out)


def second_divided_differences(
    eigenvalues: torch.Tensor, coefficients: torch.Tensor, spectral_scale: float
) -> torch.Tensor:
    r"""``phi_l[\lambda_a, \lambda_b, \lambda_c]`` for each filter, ``[m, n, n, n]``.

    From the recurrence on the 3x3 Opitz matrix,
    ``f^{k+1}_{abc} = 2 (t_a f^k_{abc} + sigma e^k_{bc}) - f^{k-1}_{abc}`` with ``f^0 = f^1 = 0``, summed
    against the coefficients on the fly (memory ``O(m n^3)``).
    """
    degree = coefficients.shape[1] - 1
    firsts = divided_differences(eigenvalues, degree, spectral_scale)  # [K + 1, n, n]
    t = 2.0 * eigenvalues / spectral_scale - 1.0
    sigma = 2.0 / spectral_scale
    n = t.shape[0]
    total = t.new_zeros(coefficients.shape[0], n, n, n)
    previous = t.new_zeros(n, n, n)
    current = t.new_zeros(n, n, n)
    ta = t.view(n, 1, 1)
    for k in range(1, degree):
        following = 2.0 * (ta * current + sigma * firsts[k].unsqueeze(0)) - previous
        previous, current = current, following
        total = total + coefficients[:, k + 1].view(-1, 1, 1, 1) * current
    return total
