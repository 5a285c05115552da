r"""SPE ``exact`` mode: the filter matrices ``phi_l(L)`` through a float64 eigendecomposition.

.. math:: \phi_l(L) = V \operatorname{diag}(\phi_l(\lambda)) V^\top, \qquad L = V \operatorname{diag}(\lambda) V^\top

**Derivatives without eigenvector gradients.** ``torch.linalg.eigh``'s backward divides by
``lambda_a - lambda_b`` and breaks down at degenerate spectra (symmetric molecules, cubic crystals). A
matrix function has derivatives that are finite everywhere (Daleckii-Krein):

.. math::

    \mathrm{d}\phi(L)[H] = V \big( \phi^{[1]} \circ \hat H \big) V^\top, \qquad \hat H = V^\top H V,
    \qquad \phi^{[1]}_{ab} = \phi[\lambda_a, \lambda_b]

    \mathrm{d}^2\phi(L)[G, H] = V S V^\top, \qquad
    S_{ij} = \sum_k \phi[\lambda_i, \lambda_k, \lambda_j] \big(\hat G_{ik} \hat H_{kj} + \hat H_{ik} \hat G_{kj}\big)

with the first and second divided differences of ``phi`` (their coincident limits ``phi'`` and
``phi''/2`` at degenerate eigenvalues), computed exactly by :mod:`equimol.nn.spe_filters`.

* :class:`MatrixFunction` (forward ``phi_l(L)``) has the backward ``grad_L = sum_l V (phi_l^[1] o G^_l) V^T``,
  ``grad_c_lk = sum_a T_k(t_a) G^_l,aa``, itself computed by :class:`MatrixFunctionBackward`,
* whose own backward (the double backward: force training, Hessians) differentiates that in ``L`` (with
  the second divided differences), in ``c`` and in the incoming gradient, so first and second
  derivatives are exact and finite at any spectrum. Third derivatives raise an error.

For small structures: ``O(n^3)`` time and ``O(m n^3)`` memory (second derivatives) per structure.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from equimol.nn.spe_filters import chebyshev_values, divided_differences, second_divided_differences


def _rotate(matrices: torch.Tensor, eigenvectors: torch.Tensor) -> torch.Tensor:
    """``V^T M V`` for ``[..., n, n]``."""
    return eigenvectors.T @ matrices @ eigenvectors


def _unrotate(matrices: torch.Tensor, eigenvectors: torch.Tensor) -> torch.Tensor:
    """``V M V^T`` for ``[..., n, n]``."""
    return eigenvectors @ matrices @ eigenvectors.T


class MatrixFunction(torch.autograd.Function):
    """``phi_l(L)`` for ``m`` Chebyshev filters.

    Inputs: ``laplacian`` ``[n, n]`` float64 symmetric, ``coefficients`` ``[m, K + 1]`` float64,
    ``spectral_scale`` (float). Output ``[m, n, n]`` float64.
    """

    @staticmethod
    def forward(ctx, laplacian: torch.Tensor, coefficients: torch.Tensor, spectral_scale: float) -> torch.Tensor:
        eigenvalues, eigenvectors = torch.linalg.eigh(laplacian)
        basis = chebyshev_values(2.0 * eigenvalues / spectral_scale - 1.0, coefficients.shape[1] - 1)
        filtered = coefficients @ basis  # [m, n]
        ctx.save_for_backward(laplacian, coefficients, eigenvalues, eigenvectors)
        ctx.spectral_scale = spectral_scale
        return torch.einsum("ia,la,ja->lij", eigenvectors, filtered, eigenvectors)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        laplacian, coefficients, eigenvalues, eigenvectors = ctx.saved_tensors
        grad_laplacian, grad_coefficients = MatrixFunctionBackward.apply(
            laplacian, coefficients, grad_output, eigenvalues, eigenvectors, ctx.spectral_scale
        )
        return grad_laplacian, grad_coefficients, None


class MatrixFunctionBackward(torch.autograd.Function):
    """The vector-Jacobian product of :class:`MatrixFunction`, differentiable once more.

    Inputs: ``laplacian``, ``coefficients``, ``grad_output`` ``[m, n, n]`` (differentiable), and the
    eigenpairs and scale from the forward (constants). Outputs ``grad_laplacian`` ``[n, n]`` and
    ``grad_coefficients`` ``[m, K + 1]``.
    """

    @staticmethod
    def forward(ctx, laplacian, coefficients, grad_output, eigenvalues, eigenvectors, spectral_scale):
        degree = coefficients.shape[1] - 1
        firsts = divided_differences(eigenvalues, degree, spectral_scale)  # [K + 1, n, n]
        basis = chebyshev_values(2.0 * eigenvalues / spectral_scale - 1.0, degree)  # [K + 1, n]
        rotated = _rotate(grad_output, eigenvectors)  # [m, n, n]
        kernel = torch.einsum("lk,kab->lab", coefficients, firsts)
        grad_laplacian = _unrotate((kernel * rotated).sum(0), eigenvectors)
        grad_coefficients = torch.einsum("ka,laa->lk", basis, rotated)
        ctx.save_for_backward(coefficients, rotated, eigenvalues, eigenvectors, firsts, basis)
        ctx.spectral_scale = spectral_scale
        return grad_laplacian, grad_coefficients

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_grad_laplacian, grad_grad_coefficients):
        coefficients, rotated, eigenvalues, eigenvectors, firsts, basis = ctx.saved_tensors
        n = rotated.shape[1]
        z_hat = (
            _rotate(grad_grad_laplacian, eigenvectors) if grad_grad_laplacian is not None else rotated.new_zeros(n, n)
        )
        y = grad_grad_coefficients if grad_grad_coefficients is not None else coefficients.new_zeros(coefficients.shape)
        kernel = torch.einsum("lk,kab->lab", coefficients, firsts)  # phi_l^[1]
        grad_laplacian = grad_coefficients = grad_output = None
        if ctx.needs_input_grad[2]:
            diagonal = torch.diag_embed(y @ basis)  # [m, n, n]
            grad_output = _unrotate(kernel * z_hat.unsqueeze(0) + diagonal, eigenvectors)
        if ctx.needs_input_grad[1]:
            grad_coefficients = torch.einsum("ab,kab,lab->lk", z_hat, firsts, rotated)
        if ctx.needs_input_grad[0]:
            seconds = second_divided_differences(eigenvalues, coefficients, ctx.spectral_scale)  # [m, n, n, n]
            second_order = torch.einsum("liab,lia,ib->ab", seconds, rotated, z_hat) + torch.einsum(
                "labj,aj,lbj->ab", seconds, z_hat, rotated
            )
            # grad_c = tr(g_k(L) G_l) also depends on L: its VJP is a first-order Daleckii-Krein term.
            from_coefficients = (torch.einsum("lk,kab->lab", y, firsts) * rotated).sum(0)
            grad_laplacian = _unrotate(second_order + from_coefficients, eigenvectors)
        return grad_laplacian, grad_coefficients, grad_output, None, None, None


def filter_matrices(laplacian: torch.Tensor, coefficients: torch.Tensor, spectral_scale: float) -> torch.Tensor:
    """``[m, n, n]`` filter matrices ``phi_l(L)`` of one structure (float64 in, float64 out)."""
    if laplacian.dtype != torch.float64 or coefficients.dtype != torch.float64:
        raise ValueError("exact SPE works in float64: cast the Laplacian and the coefficients first")
    return MatrixFunction.apply(laplacian, coefficients, spectral_scale)
