r"""The ``edge`` strategy of the Gaunt product: one coupling matrix per sample, a hand-written backward.

For one sample ``n`` the product of :mod:`equimol.tp.gaunt` is, in the component-major layout
``[rows, C]`` (the ``C`` channels of a component contiguous),

.. math::

    a = x \odot w_1, \qquad
    z_0 = M(y)\,\big[w_2 \otimes a\big], \qquad z = z_0 \odot w_3, \qquad
    M(y)_{k_3, (i_2, k_1)} = \sum_{k_2} y_{k_2}\, K_{k_2, k_3, i_2, k_1},

with ``x`` ``[d1, C]``, per-component weights ``w_1`` ``[d1, C]`` and ``w_3`` ``[d3, C]`` (the
per-irrep weights repeated over their components), ``w_2`` ``[n2, C]``, ``w_2 \otimes a``
``[n2 d1, C]`` and ``K`` the dense Gaunt coupling with the output scale folded in (nonzero only
for ``k_2`` in irrep ``i_2``). ``M(y)`` for all samples is one GEMM, ``x2 @ K``; applying it is one
batched GEMM over the samples, O(d1 d2 d3 n2 + C d1 d3 n2) per sample: the fastest form at small L.

:class:`EdgeProduct` is an autograd function whose backward is written out,

.. math::

    \bar z_0 = \bar z \odot w_3, \quad \bar w_3 = \bar z \odot z_0, \quad
    \overline{w_2 \otimes a} = M^\top \bar z_0, \quad \bar M = \bar z_0 (w_2 \otimes a)^\top,
    \quad \bar y = \bar M K^\top,

then ``bar a = sum_{i2} w_2 bar(w2 a)``, ``bar w_2 = sum_{k1} a bar(w2 a)``, ``bar x = w_1 bar a``,
``bar w_1 = x bar a``, with the per-component weight gradients summed over each irrep's
components. Its layout changes are gathers through inverse permutations (autograd would scatter
with ``index_add``), nothing is zero-filled, and ``w_2 \otimes a`` is not kept. The backward is
made of differentiable operations, so ``create_graph=True`` (forces in training) gives exact
higher derivatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EdgeOperators:
    """Constants of the edge product (one per module, registered as its buffers).

    Attributes:
        coupling: ``[d2, d3 * n2 * d1]``, ``K`` of the module docstring.
        gather_in1: permutation, mul_ir layout of ``x1`` -> component-major ``[d1, C]`` (flattened).
        scatter_in1: its inverse.
        gather_weight: ``weight [N, W]`` columns -> ``[w1 (d1 C) | w2 (n2 C) | w3 (d3 C)]`` component-major.
        gather_out: permutation, component-major ``[d3, C]`` -> mul_ir layout of the output.
        scatter_out: its inverse.
        rows1, rows3: for each irrep of input 1 and of the output, its ``(start, stop)`` component rows.
        channels: ``C``; count2: ``n2``, the irreps of the second input.
    """

    coupling: torch.Tensor
    gather_in1: torch.Tensor
    scatter_in1: torch.Tensor
    gather_weight: torch.Tensor
    gather_out: torch.Tensor
    scatter_out: torch.Tensor
    rows1: list[tuple[int, int]]
    rows3: list[tuple[int, int]]
    channels: int
    count2: int


def _sum_per_irrep(per_component: torch.Tensor, rows: list[tuple[int, int]]) -> torch.Tensor:
    """``[N, d, C]`` -> ``[N, C * n]`` channel-major (the weight layout): sum over each irrep's component rows."""
    sums = [per_component[:, start:stop].sum(1) for start, stop in rows]
    return torch.stack(sums, dim=2).reshape(per_component.shape[0], -1)


def _intermediates(x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, ops: EdgeOperators):
    """``x [N, d1, C]``, the expanded weights ``[N, d1 + n2 + d3, C]``, ``a``, ``M(y) [N, d3, n2 d1]`` and ``z0``."""
    count, channels = x1.shape[0], ops.channels
    d1, d3 = ops.rows1[-1][1], ops.rows3[-1][1]
    x = x1.index_select(1, ops.gather_in1).view(count, d1, channels)
    expanded = weight.index_select(1, ops.gather_weight).view(count, -1, channels)
    _, w2, _ = expanded.split([d1, ops.count2, d3], dim=1)
    a = x * expanded[:, :d1]
    a12 = (w2.unsqueeze(2) * a.unsqueeze(1)).view(count, -1, channels)  # [N, n2 * d1, C]
    matrices = (x2 @ ops.coupling).view(count, d3, -1)
    return x, expanded, a, matrices, torch.bmm(matrices, a12)


class EdgeProduct(torch.autograd.Function):
    """``apply(x1 [N, D1], x2 [N, D2], weight [N, W], ops) -> [N, D_out]`` (mul_ir layouts)."""

    @staticmethod
    def forward(ctx, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, ops: EdgeOperators) -> torch.Tensor:
        x, expanded, a, matrices, z0 = _intermediates(x1, x2, weight, ops)
        ctx.ops = ops
        ctx.save_for_backward(x1, x2, weight, x, expanded, a, matrices, z0)
        w3 = expanded[:, expanded.shape[1] - z0.shape[1] :]
        return (z0 * w3).view(x1.shape[0], -1).index_select(1, ops.gather_out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x1, x2, weight, *saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: recompute the intermediates with their history
            saved = None
        return (*edge_vjp(x1, x2, weight, grad, ctx.ops, ctx.needs_input_grad[:3], saved), None)


def edge_vjp(x1, x2, weight, grad, ops: EdgeOperators, needs: tuple[bool, bool, bool], saved=None) -> tuple:
    """Gradients ``(x1, x2, weight)`` (None where ``needs`` is False) for the output gradient ``grad [N, D_out]``.

    ``saved`` holds the forward's intermediates (recomputed when None). Differentiable operations
    only: under ``create_graph`` the result has a graph, so higher derivatives are exact.
    """
    x, expanded, a, matrices, z0 = _intermediates(x1, x2, weight, ops) if saved is None else saved
    count, channels = x.shape[0], ops.channels
    d1, d3 = x.shape[1], z0.shape[1]
    w1, w2, w3 = expanded.split([d1, ops.count2, d3], dim=1)
    grad_z = grad.index_select(1, ops.scatter_out).view(count, d3, channels)
    grad_z0 = grad_z * w3
    grad_a12 = torch.bmm(matrices.transpose(1, 2), grad_z0).view(count, ops.count2, d1, channels)
    grad_x2 = None
    if needs[1]:
        a12 = (w2.unsqueeze(2) * a.unsqueeze(1)).view(count, -1, channels)
        grad_matrices = torch.bmm(grad_z0, a12.transpose(1, 2))  # [N, d3, n2 * d1]
        grad_x2 = grad_matrices.view(count, -1) @ ops.coupling.T
    grad_x1 = grad_weight = None
    if needs[0] or needs[2]:
        grad_a = (grad_a12 * w2.unsqueeze(2)).sum(1)  # [N, d1, C]
        grad_x1 = (grad_a * w1).view(count, -1).index_select(1, ops.scatter_in1)
    if needs[2]:
        grad_w2 = (grad_a12 * a.unsqueeze(1)).sum(2).transpose(1, 2).reshape(count, -1)
        parts = (_sum_per_irrep(grad_a * x, ops.rows1), grad_w2, _sum_per_irrep(grad_z * z0, ops.rows3))
        grad_weight = torch.cat(parts, dim=1)
    return grad_x1 if needs[0] else None, grad_x2, grad_weight


def edge_product(x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, ops: EdgeOperators) -> torch.Tensor:
    """The Gaunt product ``[N, D_out]`` of ``x1 [N, D1]``, ``x2 [N, D2]`` and ``weight [N, W]`` (mul_ir layouts)."""
    return EdgeProduct.apply(x1, x2, weight, ops)
