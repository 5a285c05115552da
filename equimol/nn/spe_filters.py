r"""The learnable spectral filters of SPE, shared by the ``exact`` and ``chebyshev`` modes.

Each of the ``m`` filters is a Chebyshev expansion of degree ``K`` in the rescaled eigenvalue:

.. math::

    \phi_l(\lambda) = \sum_{k=0}^{K} c_{lk}\, T_k(t), \qquad t = \frac{2 \lambda}{s} - 1,

with ``T_k`` the Chebyshev polynomials of the first kind and ``s`` a fixed spectral scale (Å-free:
Laplacian weights are dimensionless). Because ``\phi_l`` is a polynomial, ``\phi_l(L)`` is the same
matrix whether it is evaluated through the eigendecomposition of ``L`` (``exact``) or with the three-term
recurrence on sparse products (``chebyshev``); the two modes differ only by rounding. ``s`` is fixed
(not a per-structure spectral bound) so the filter is local (``K`` hops) and size-extensive; eigenvalues
above ``s`` are handled by the same polynomial, smoothly.
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
    return torch.stack(values)


def chebyshev_derivatives(t: torch.Tensor, degree: int) -> torch.Tensor:
    """``T_0'(t) .. T_K'(t)`` via ``T_k' = k U_{k-1}`` (``U`` of the second kind), ``[K + 1, *t.shape]``."""
    second_kind = [torch.ones_like(t), 2 * t]
    for _ in range(2, degree):
        second_kind.append(2 * t * second_kind[-1] - second_kind[-2])
    derivatives = [torch.zeros_like(t)]
    for k in range(1, degree + 1):
        derivatives.append(k * second_kind[k - 1])
    return torch.stack(derivatives)


def divided_differences(eigenvalues: torch.Tensor, degree: int, spectral_scale: float) -> torch.Tensor:
    r"""First divided differences of each ``g_k(\lambda) = T_k(2\lambda/s - 1)`` on the spectrum.

    .. math::

        D_{k,ab} = \frac{g_k(\lambda_a) - g_k(\lambda_b)}{\lambda_a - \lambda_b}
        \quad\text{or}\quad g_k'\!\left(\tfrac{\lambda_a + \lambda_b}{2}\right)
        \text{ if } |\lambda_a - \lambda_b| < \tau

    with ``tau = 1e-6 s``. The degenerate branch is the exact limit; the midpoint keeps the result
    symmetric and its error is ``g''' tau^2 / 24`` (below 1e-10 relative for ``K <= 16``), while the
    quotient branch loses at most ``eps / tau`` (about 1e-10 relative) to cancellation.

    Args:
        eigenvalues: ``[n]`` float64.
        degree: ``K``.
        spectral_scale: ``s``.

    Returns:
        ``[K + 1, n, n]`` float64, symmetric in the last two indices.
    """
    t = 2.0 * eigenvalues / spectral_scale - 1.0
    values = chebyshev_values(t, degree)
    gap = eigenvalues.unsqueeze(1) - eigenvalues.unsqueeze(0)
    tolerance = 1e-6 * spectral_scale
    close = gap.abs() < tolerance
    safe_gap = torch.where(close, torch.ones_like(gap), gap)
    quotient = (values.unsqueeze(2) - values.unsqueeze(1)) / safe_gap
    # t is affine in lambda, so t at the midpoint eigenvalue is the mean of the two t values.
    midpoint = 0.5 * (t.unsqueeze(1) + t.unsqueeze(0))
    limit = chebyshev_derivatives(midpoint, degree) * (2.0 / spectral_scale)
    return torch.where(close.unsqueeze(0), limit, quotient)
