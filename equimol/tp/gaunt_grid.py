r"""The ``grid`` strategy of the Gaunt product: paired quadrature, dense GEMMs, cache-sized blocks.

The product of :mod:`equimol.tp.gaunt` for one sample ``n`` and channel ``c`` is

.. math::

    z_{k_3} = w_{3, i(k_3)}\, s_{k_3} \sum_g q_g\, Y_{k_3}(s_g)\, f_1(s_g)\, f_2(s_g), \qquad
    f_1 = \sum_{k_1} w_{1, i(k_1)} x_{k_1} Y_{k_1}, \quad
    f_2 = \sum_{i_2} w_{2, i_2} \sum_{k_2 \in i_2} y_{k_2} Y_{k_2},

on a Gauss-Legendre (in ``cos theta``) x uniform (in ``phi``) grid exact for degree
``l1_max + l2_max + l3_max``, with ``s_k`` the output normalization (``sqrt(4 pi / F)``).

**Paired grid.** The number of polar nodes is rounded up to an even count, so the nodes come in
mirror pairs ``theta, pi - theta`` with equal weights. Under that mirror (``y -> -y`` in e3nn's
axes) ``Y_k`` is multiplied by ``sigma_k = +-1`` (:func:`mirror_signs`, read off e3nn). With the
components sorted even (``sigma = +1``) then odd, and the grid split into the upper half ``U``
and its mirror image ``L`` (``H = G / 2`` points each):

.. math::

    f_1(U) = e + o,\ f_1(L) = e - o, \quad e = a_E S_E,\ o = a_O S_O; \qquad
    z_E \propto (h_U + h_L) A_E,\ z_O \propto (h_U - h_L) A_O

for ``h = f_1 f_2``: synthesis and analysis each cost ``D H`` multiply-adds per (sample, channel),
half of the dense ``D G``.

**Blocks.** Samples are processed in blocks of :func:`block_size` samples, so that every
intermediate (``[n C, G]``) stays in the CPU cache and each step is one GEMM with ``n C`` rows.
:class:`GridProduct` is an autograd function: its backward recomputes the grid values block by
block instead of storing them (it keeps the inputs and the unscaled output ``[N, C, D_out]``).
When a graph of the backward is requested (``create_graph=True``, forces in training) the
backward runs the same formulas once over all samples with differentiable operations, so
gradients of any order are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from e3nn import o3

from equimol.tp.sphere_grid import spherical_harmonics_on_grid

#: Floats per block intermediate ``[n C, G]`` (about 2 MiB in float32; measured best on a 2-core EPYC).
BLOCK_ELEMENTS = 1 << 19


def paired_grid(total_degree: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Upper-half directions of the smallest even-polar product grid exact for ``total_degree``.

    Returns ``theta_upper [T / 2]`` (``cos theta > 0``), ``phi [P]``, the quadrature weight of
    each upper point ``[T / 2 * P]`` (``theta`` outer; its mirror point has the same weight) and
    ``theta_lower = pi - theta_upper``. Exact: ``2 T - 1 >= total_degree`` and ``P > total_degree``.
    """
    n_theta = total_degree // 2 + 1
    n_theta += n_theta % 2
    n_phi = total_degree + 1
    nodes, weights = np.polynomial.legendre.leggauss(n_theta)
    upper = torch.from_numpy(nodes[n_theta // 2 :].copy())
    theta_weights = torch.from_numpy(weights[n_theta // 2 :].copy())
    phi = torch.arange(n_phi, dtype=torch.float64) * (2 * math.pi / n_phi)
    point_weights = (theta_weights[:, None] * (2 * math.pi / n_phi)).expand(-1, n_phi).reshape(-1)
    theta_upper = torch.arccos(upper)
    return theta_upper, phi, point_weights, math.pi - theta_upper


def mirror_signs(harmonics_upper: torch.Tensor, harmonics_lower: torch.Tensor) -> torch.Tensor:
    """``sigma_k`` with ``Y_k(L) = sigma_k Y_k(U)`` for rows ``[K, H]``; RuntimeError if a row is neither."""
    plus = (harmonics_lower - harmonics_upper).abs().amax(1)
    minus = (harmonics_lower + harmonics_upper).abs().amax(1)
    if bool(((plus > 1e-12) & (minus > 1e-12)).any()):
        raise RuntimeError("e3nn's harmonics are neither even nor odd under theta -> pi - theta")
    return torch.where(plus <= 1e-12, 1.0, -1.0).to(torch.float64)


def component_degrees(irreps: o3.Irreps) -> torch.Tensor:
    """Canonical index ``l^2 + l + m`` of every component of one channel, irreps order ``[D]``."""
    return torch.cat([torch.arange(ir.l * ir.l, (ir.l + 1) ** 2) for _, ir in irreps])


def component_irrep(irreps: o3.Irreps) -> torch.Tensor:
    """Irrep position of every component of one channel, ``[D]``."""
    return torch.cat([torch.full((ir.dim,), i) for i, (_, ir) in enumerate(irreps)])


def channel_major_gather(irreps: o3.Irreps, order: torch.Tensor) -> torch.Tensor:
    """Index into the mul_ir layout giving ``[C, D]`` (channel outer) with components in ``order``."""
    channels = irreps[0].mul
    starts = torch.tensor([sl.start for sl in irreps.slices()])
    dims = torch.tensor([ir.dim for _, ir in irreps])
    irrep = component_irrep(irreps)
    within = torch.cat([torch.arange(ir.dim) for _, ir in irreps])
    column = starts[irrep] + within  # channel 0
    index = column[order][None, :] + torch.arange(channels)[:, None] * dims[irrep[order]][None, :]
    return index.flatten()


@dataclass
class GridOperators:
    """Constants of the grid product (buffers of the backend, in its dtype and device).

    ``gather1 [C D1]`` / ``scatter1``: mul_ir -> channel-major with even components first, and back;
    ``expand1 [n1, D1]`` / ``expand_out [n3, D3]``: irrep -> its components (one-hot rows);
    ``synthesis_even [E1, H]``, ``synthesis_odd [O1, H]``: ``Y`` on the upper half-grid;
    ``synthesis2 [D2, 2 H]``: ``[Y_k [k even] | Y_k [k odd]]`` of ``x2``'s components on it;
    ``analysis_even [H, E3]``, ``analysis_odd [H, O3]``: ``2 q Y s``; ``gather_out`` / ``scatter_out``:
    channel-major sorted output <-> mul_ir; ``slices2``: the irreps of ``x2``; ``channels``: ``C``.
    """

    gather1: torch.Tensor
    scatter1: torch.Tensor
    expand1: torch.Tensor
    synthesis_even: torch.Tensor
    synthesis_odd: torch.Tensor
    synthesis2: torch.Tensor
    analysis_even: torch.Tensor
    analysis_odd: torch.Tensor
    expand_out: torch.Tensor
    gather_out: torch.Tensor
    scatter_out: torch.Tensor
    slices2: list[slice]
    channels: int


def build_grid_constants(
    irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps, output_scale: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Float64 constants and long indices of :class:`GridOperators` (``output_scale [n3]`` folded in)."""
    lmax = [max(ir.l for _, ir in irreps) for irreps in (irreps_in1, irreps_in2, irreps_out)]
    theta_upper, phi, point_weights, theta_lower = paired_grid(sum(lmax))
    top = max(lmax)
    upper = spherical_harmonics_on_grid(top, theta_upper, phi).flatten(1)  # [(top+1)^2, H]
    lower = spherical_harmonics_on_grid(top, theta_lower, phi).flatten(1)
    signs = mirror_signs(upper, lower)
    constants: dict[str, torch.Tensor] = {}

    def sorted_components(irreps: o3.Irreps) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        canonical = component_degrees(irreps)
        even = signs[canonical] > 0
        order = torch.cat([torch.nonzero(even).flatten(), torch.nonzero(~even).flatten()])
        expand = torch.nn.functional.one_hot(component_irrep(irreps)[order], len(irreps)).T.double()
        return order, canonical[order], expand, int(even.sum())

    order1, canonical1, constants["expand1"], even1 = sorted_components(irreps_in1)
    constants["gather1"] = channel_major_gather(irreps_in1, order1)
    constants["scatter1"] = torch.argsort(constants["gather1"])
    constants["synthesis_even"] = upper[canonical1[:even1]]
    constants["synthesis_odd"] = upper[canonical1[even1:]]
    rows2 = upper[component_degrees(irreps_in2)]
    even2 = (signs[component_degrees(irreps_in2)] > 0)[:, None]
    constants["synthesis2"] = torch.cat([rows2 * even2, rows2 * ~even2], 1)
    order3, canonical3, constants["expand_out"], even3 = sorted_components(irreps_out)
    irrep3 = component_irrep(irreps_out)[order3]
    analysis = 2 * point_weights[:, None] * upper[canonical3].T * output_scale[irrep3][None, :]
    constants["analysis_even"], constants["analysis_odd"] = analysis[:, :even3], analysis[:, even3:]
    constants["scatter_out"] = channel_major_gather(irreps_out, order3)
    constants["gather_out"] = torch.argsort(constants["scatter_out"])
    return constants


def block_size(channels: int, grid_points: int) -> int:
    """Samples per block: ``BLOCK_ELEMENTS / (C G)``, at least one."""
    return max(1, BLOCK_ELEMENTS // (channels * grid_points))


def _synthesis(ops: GridOperators, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor):
    """Inputs of one block in rows ``r = (n, c)``: ``x1 [R, D1]``, expanded ``w1 [R, D1]``, ``w2``,
    ``w3 [R, n3]``, the ``x2`` basis ``[n, n2, 2 H]``, ``e``, ``o`` ``[R, H]`` and ``f2 [R, 2 H]``."""
    count, channels = x1.shape[0], ops.channels
    rows = count * channels
    n1, n2 = ops.expand1.shape[0], len(ops.slices2)
    w1, w2, w3 = torch.split(weight, [channels * n1, channels * n2, channels * ops.expand_out.shape[0]], 1)
    w2 = w2.reshape(count, channels, n2)
    x1c = x1.index_select(1, ops.gather1).view(rows, -1)
    w1e = w1.reshape(rows, n1) @ ops.expand1
    a1 = x1c * w1e
    even = ops.synthesis_even.shape[0]
    e, o = a1[:, :even] @ ops.synthesis_even, a1[:, even:] @ ops.synthesis_odd
    basis = torch.stack([x2[:, sl] @ ops.synthesis2[sl] for sl in ops.slices2], 1)  # [n, n2, 2H]
    f2 = torch.bmm(w2, basis).view(rows, -1)
    return x1c, w1e, w2, w3.reshape(rows, -1), basis, e, o, f2


def _analysis(ops: GridOperators, e: torch.Tensor, o: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Unscaled sorted output ``[R, D3]`` from ``(h_U + h_L) / 2 = e P + o Q`` and ``(h_U - h_L) / 2 = e Q + o P``."""
    half = e.shape[1]
    p, q = f2[:, :half], f2[:, half:]
    plus, minus = torch.addcmul(e * p, o, q), torch.addcmul(e * q, o, p)
    return torch.cat([plus @ ops.analysis_even, minus @ ops.analysis_odd], 1)


def forward_block(ops: GridOperators, x1, x2, weight) -> tuple[torch.Tensor, torch.Tensor]:
    """Output ``[n, D_out]`` (mul_ir) and the unscaled sorted channel-major output ``[n C, D3]``."""
    _, _, _, w3, _, e, o, f2 = _synthesis(ops, x1, x2, weight)
    projected = _analysis(ops, e, o, f2)
    scaled = projected * (w3 @ ops.expand_out)
    return scaled.view(x1.shape[0], -1).index_select(1, ops.gather_out), projected


def backward_block(ops: GridOperators, x1, x2, weight, grad, projected=None, need_x2: bool = True):
    """Gradients ``(x1, x2, weight)`` of one block for output gradient ``grad [n, D_out]``.

    ``projected`` (from :func:`forward_block`) is recomputed when None; ``need_x2=False`` skips
    the gradient of ``x2`` (None). Differentiable operations only, so it also serves double backward.
    """
    count, channels = x1.shape[0], ops.channels
    x1c, w1e, w2, w3, basis, e, o, f2 = _synthesis(ops, x1, x2, weight)
    if projected is None:
        projected = _analysis(ops, e, o, f2)
    grad_c = grad.index_select(1, ops.scatter_out).view(count * channels, -1)  # [R, D3]
    grad_w3 = (grad_c * projected) @ ops.expand_out.T
    grad_p = grad_c * (w3 @ ops.expand_out)
    even3, half = ops.analysis_even.shape[1], e.shape[1]
    plus, minus = grad_p[:, :even3] @ ops.analysis_even.T, grad_p[:, even3:] @ ops.analysis_odd.T
    p, q = f2[:, :half], f2[:, half:]
    grad_e, grad_o = torch.addcmul(plus * p, minus, q), torch.addcmul(plus * q, minus, p)
    grad_f2 = torch.cat([torch.addcmul(plus * e, minus, o), torch.addcmul(plus * o, minus, e)], 1)
    grad_a1 = torch.cat([grad_e @ ops.synthesis_even.T, grad_o @ ops.synthesis_odd.T], 1)
    grad_x1 = (grad_a1 * w1e).view(count, -1).index_select(1, ops.scatter1)
    grad_w1 = (grad_a1 * x1c) @ ops.expand1.T
    grad_f2 = grad_f2.view(count, channels, -1)
    grad_w2 = torch.bmm(grad_f2, basis.transpose(1, 2))
    grad_x2 = None
    if need_x2:
        grad_basis = torch.bmm(w2.transpose(1, 2), grad_f2)  # [n, n2, 2H]
        grad_x2 = torch.cat([grad_basis[:, i] @ ops.synthesis2[sl].T for i, sl in enumerate(ops.slices2)], 1)
    grad_weight = torch.cat([grad_w1.view(count, -1), grad_w2.view(count, -1), grad_w3.view(count, -1)], 1)
    return grad_x1, grad_x2, grad_weight


class GridProduct(torch.autograd.Function):
    """Blocked grid product with a recomputing backward; ``apply(x1, x2, weight, ops)``."""

    @staticmethod
    def forward(ctx, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, ops: GridOperators) -> torch.Tensor:
        count = x1.shape[0]
        step = block_size(ops.channels, ops.synthesis2.shape[1])
        outputs, projected = [], []
        for start in range(0, count, step):
            rows = slice(start, start + step)
            out, proj = forward_block(ops, x1[rows], x2[rows], weight[rows])
            outputs.append(out)
            projected.append(proj)
        ctx.ops = ops
        ctx.save_for_backward(x1, x2, weight, torch.cat(projected))
        return torch.cat(outputs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x1, x2, weight, projected = ctx.saved_tensors
        ops = ctx.ops
        need_x2 = ctx.needs_input_grad[1]
        if torch.is_grad_enabled():  # create_graph: one differentiable pass (no saved grid values)
            return (*backward_block(ops, x1, x2, weight, grad, need_x2=need_x2), None)
        step = block_size(ops.channels, ops.synthesis2.shape[1])
        parts = []
        for start in range(0, x1.shape[0], step):
            rows = slice(start, start + step)
            proj = projected[start * ops.channels : (start + step) * ops.channels]
            parts.append(backward_block(ops, x1[rows], x2[rows], weight[rows], grad[rows], proj, need_x2))
        return (*(None if group[0] is None else torch.cat(group) for group in zip(*parts)), None)


def grid_product(x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, ops: GridOperators) -> torch.Tensor:
    """The Gaunt product ``[N, D_out]`` of ``x1 [N, D1]``, ``x2 [N, D2]`` and ``weight [N, W]`` (mul_ir layouts)."""
    return GridProduct.apply(x1, x2, weight, ops)
