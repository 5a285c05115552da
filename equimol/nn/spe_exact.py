r"""SPE ``exact`` mode: the filter matrices ``phi_l(L)`` through a float64 eigendecomposition.

.. math:: \phi_l(L) = V \operatorname{diag}(\phi_l(\lambda)) V^\top, \qquad L = V \operatorname{diag}(\lambda) V^\top

**Backward without eigenvector gradients.** ``torch.linalg.eigh``'s backward divides by
``lambda_a - lambda_b`` and is NaN for degenerate spectra (symmetric molecules, cubic crystals). A matrix
function has a derivative that is finite everywhere (Daleckii-Krein):

.. math::

    \mathrm{d}\phi(L)[E] = V \big( D \circ (V^\top E V) \big) V^\top, \qquad
    D_{ab} = \phi[\lambda_a, \lambda_b]

with ``D`` the first divided differences of ``phi`` (``phi'(lambda_a)`` in the degenerate limit), so the
vector-Jacobian product is ``grad_L = V (D o (V^T grad_F V)) V^T`` (``D`` symmetric) and
``grad_c_lk = sum_a T_k(t_a) (V^T grad_F_l V)_aa``. :class:`MatrixFunction` implements this.

**Double backward.** The backward is written in differentiable torch operations of ``grad_F`` and the
coefficients ``c`` with ``V`` and ``lambda`` held fixed. So force training (the gradient of a force loss
with respect to the parameters, i.e. mixed derivatives ``d^2 E / d theta d x``) is exact and finite. The
pure second derivative with respect to ``L`` (a Hessian in positions, e.g. for phonons) would need the
second divided differences and is NOT provided by this mode: its extra term is dropped. Use the
``chebyshev`` mode, which is plain autograd and exact to all orders, for Hessians.

For small structures: ``O(n^3)`` time and ``O(K n^2)`` memory per structure.
"""

from __future__ import annotations

import torch

from equimol.nn.spe_filters import chebyshev_values, divided_differences


class MatrixFunction(torch.autograd.Function):
    """``phi_l(L)`` for ``m`` Chebyshev filters, with a degenerate-safe backward.

    Inputs: ``laplacian`` ``[n, n]`` float64 symmetric, ``coefficients`` ``[m, K + 1]`` float64,
    ``spectral_scale`` (float). Output ``[m, n, n]`` float64.
    """

    @staticmethod
    def forward(ctx, laplacian: torch.Tensor, coefficients: torch.Tensor, spectral_scale: float) -> torch.Tensor:
        eigenvalues, eigenvectors = torch.linalg.eigh(laplacian)
        degree = coefficients.shape[1] - 1
        basis = chebyshev_values(2.0 * eigenvalues / spectral_scale - 1.0, degree)  # [K + 1, n]
        filtered = coefficients @ basis  # [m, n]
        ctx.save_for_backward(coefficients, eigenvalues, eigenvectors, basis)
        ctx.spectral_scale = spectral_scale
        return torch.einsum("ia,la,ja->lij", eigenvectors, filtered, eigenvectors)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        coefficients, eigenvalues, eigenvectors, basis = ctx.saved_tensors
        degree = coefficients.shape[1] - 1
        # grad in the eigenbasis, [m, n, n]
        rotated = torch.einsum("ia,lij,jb->lab", eigenvectors, grad_output, eigenvectors)
        grad_laplacian = grad_coefficients = None
        if ctx.needs_input_grad[0]:
            differences = divided_differences(eigenvalues, degree, ctx.spectral_scale)  # [K + 1, n, n]
            weighted = torch.einsum("lk,kab,lab->ab", coefficients, differences, rotated)
            grad_laplacian = eigenvectors @ weighted @ eigenvectors.T
        if ctx.needs_input_grad[1]:
            grad_coefficients = torch.einsum("ka,laa->lk", basis, rotated)
        return grad_laplacian, grad_coefficients, None


def filter_matrices(laplacian: torch.Tensor, coefficients: torch.Tensor, spectral_scale: float) -> torch.Tensor:
    """``[m, n, n]`` filter matrices ``phi_l(L)`` of one structure (float64 in, float64 out)."""
    if laplacian.dtype != torch.float64 or coefficients.dtype != torch.float64:
        raise ValueError("exact SPE works in float64: cast the Laplacian and the coefficients first")
    return MatrixFunction.apply(laplacian, coefficients, spectral_scale)
