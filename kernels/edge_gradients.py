r"""Triton kernel of the per-edge gradients of the fused message (no reduction across programs).

For the factored message of :mod:`equimol.kernels.message` and an upstream gradient ``g`` of the
receivers, every edge's gradients with respect to its edge attributes ``y`` and its weights depend
on that edge only: one program owns ``BLOCK_EDGES`` whole edges (all channels), recomputes the
forward projections, and stores its gradients with plain stores (deterministic by construction).
The gradient with respect to the gathered node features needs a reduction over the edges of each
sender and reuses the message kernels on the adjoint product instead.

**Formulas.** For edge ``e`` (sender ``s``, receiver ``t``) and channel ``c`` (indices dropped), with
the weight-scaled inputs ``\hat x_i = x_{s,i} w^{in}_{\deg i}``, ``\hat y_j = y_j w^{attr}_{\deg j}``,
the projections ``a_r = \sum_i \hat x_i F^{in}_{ir}``, ``b_r = \sum_j \hat y_j F^{attr}_{jr}``, the
upstream row ``g_k = G_{t,c,k}`` and its pull-back through the output
``u_r = \sum_k F^{out}_{rk}\, w^{out}_{\deg k}\, g_k``:

.. math::

    \frac{\partial L}{\partial w^{mid}_m} = \sum_{r:\, \pi(r) = m} u_r\, a_r\, b_r, \qquad
    \frac{\partial L}{\partial w^{out}_n} = \sum_{k:\, \deg k = n} g_k \sum_r F^{out}_{rk}\, a_r b_r w^{mid}_{\pi(r)},

    \frac{\partial L}{\partial w^{attr}_n} = \sum_{j:\, \deg j = n} y_j\, v_j, \qquad
    \frac{\partial L}{\partial y_j} = \sum_c w^{attr}_{c,\deg j}\, v_{c,j}, \qquad
    v_j = \sum_r F^{attr}_{jr}\, u_r\, a_r\, w^{mid}_{\pi(r)},

    \frac{\partial L}{\partial w^{in}_n} = \sum_{i:\, \deg i = n} x_{s,i} \sum_r F^{in}_{ir} u_r b_r w^{mid}_{\pi(r)}

(``y`` is shared by the channels, hence the sum over ``c``). The slot sums ``\sum_{k: \deg k = n}``
are one small matrix product with a one-hot map (:func:`_degree_sums`). The node-feature gradient
``\partial L / \partial x_{s,i} = w^{in}_{\deg i} \sum_r F^{in}_{ir} u_r b_r w^{mid}_{\pi(r)}``, summed
over the edges leaving ``s``, is the message kernel on the adjoint product (``F^{in}`` and ``F^{out}``
swapped and transposed, ``w^{in}`` and ``w^{out}`` swapped, gathered at ``t``, scattered into ``s``).
"""

from __future__ import annotations

import triton
import triton.language as tl
from equimol.kernels.message import (
    autotune_configs,
    gather_rows,
    load_factors,
    prune_configs,
    slot_weights,
)


@triton.jit
def _degree_sums(values, deg_ptr, D, D_P: tl.constexpr, N_P: tl.constexpr):
    """Sum the columns of ``values`` ``[rows, D_P]`` that belong to each weight slot: ``[rows, N_P]``."""
    k = tl.arange(0, D_P)
    slots = tl.arange(0, N_P)
    degree = tl.load(deg_ptr + k)
    one_hot = ((degree[:, None] == slots[None, :]) & (k < D)[:, None]).to(values.dtype)
    return tl.dot(values, one_hot, input_precision="ieee")


@triton.jit
def _store_slot_sums(values, slot_ptr, D, D_P: tl.constexpr, N_P: tl.constexpr, out_ptr, row, N, valid):
    """Store the weight-slot sums of ``values`` ``[rows, D_P]`` into ``out[row, :N]`` (weight shape)."""
    sums = _degree_sums(values, slot_ptr, D, D_P, N_P)
    slots = tl.arange(0, N_P)
    tl.store(out_ptr + row[:, None] * N + slots[None, :], sums, mask=valid[:, None] & (slots < N)[None, :])


@triton.autotune(
    configs=autotune_configs(),
    key=["C_P", "D_IN_P", "D_ATTR_P", "RANK_P", "D_OUT_P", "HAS_W_IN", "HAS_W_ATTR", "HAS_W_OUT", "HAS_W_MID"],
    prune_configs_by={"early_config_prune": prune_configs},
)
@triton.jit
def edge_gradients_kernel(
    feat_ptr,
    feat_stride,
    src_ptr,
    layout_in,
    grad_ptr,
    grad_stride,
    dst_ptr,
    layout_out,
    attr_ptr,
    weights,
    maps,
    factors,
    sizes,
    grads,
    num_edges,
    C_P: tl.constexpr,
    D_IN_P: tl.constexpr,
    D_ATTR_P: tl.constexpr,
    RANK_P: tl.constexpr,
    D_OUT_P: tl.constexpr,
    N_IN_P: tl.constexpr,
    N_ATTR_P: tl.constexpr,
    N_OUT_P: tl.constexpr,
    N_MID_P: tl.constexpr,
    HAS_W_IN: tl.constexpr,
    HAS_W_ATTR: tl.constexpr,
    HAS_W_OUT: tl.constexpr,
    HAS_W_MID: tl.constexpr,
    NEED_ATTR: tl.constexpr,
    NEED_W_IN: tl.constexpr,
    NEED_W_ATTR: tl.constexpr,
    NEED_W_OUT: tl.constexpr,
    NEED_W_MID: tl.constexpr,
    BLOCK_EDGES: tl.constexpr,
):
    """Per-edge gradients: ``y`` (summed over channels) and the weight groups, into ``grads``
    ``(grad_attr, grad_w_in, grad_w_attr, grad_w_out, grad_w_mid)``.

    With ``g`` the upstream gradient gathered at the receiver, ``T = (g w_out) F_out^T``,
    ``P = (x_s F_in)(y_s F_attr)``: ``grad w_mid = slot-sum(T P)``, and with ``T' = T w_mid``:
    ``grad w_out = deg-sum(g * (P w_mid) F_out)``, ``grad y_s = (T' (x_s F_in)) F_attr^T``,
    ``grad x_s = (T' (y_s F_attr)) F_in^T``, with ``_s`` the weight-scaled inputs.
    """
    C, D_IN, D_ATTR, D_OUT, N_IN, N_ATTR, N_OUT, RANK, N_MID = sizes
    w_in_ptr, w_attr_ptr, w_out_ptr, w_mid_ptr = weights
    deg_in_ptr, deg_attr_ptr, deg_out_ptr, mid_map_ptr = maps
    grad_attr_ptr, grad_w_in_ptr, grad_w_attr_ptr, grad_w_out_ptr, grad_w_mid_ptr = grads
    rows = tl.arange(0, BLOCK_EDGES * C_P)
    edge = tl.program_id(0).to(tl.int64) * BLOCK_EDGES + rows // C_P
    channel = rows % C_P
    valid = (edge < num_edges) & (channel < C)
    row = edge * C + channel
    k_in = tl.arange(0, D_IN_P)
    k_attr = tl.arange(0, D_ATTR_P)
    k_out = tl.arange(0, D_OUT_P)
    rank = tl.arange(0, RANK_P)

    x, in_mask = gather_rows(feat_ptr, feat_stride, src_ptr, edge, layout_in, channel, valid, k_in, D_IN)
    x_scaled = x
    if HAS_W_IN:
        x_scaled = x * slot_weights(w_in_ptr, row, N_IN, deg_in_ptr, k_in, in_mask)
    attr_mask = valid[:, None] & (k_attr < D_ATTR)[None, :]
    y = tl.load(attr_ptr + edge[:, None] * D_ATTR + k_attr[None, :], mask=attr_mask, other=0.0)
    w_attr = tl.full((BLOCK_EDGES * C_P, D_ATTR_P), 1.0, dtype=y.dtype)
    if HAS_W_ATTR:
        w_attr = slot_weights(w_attr_ptr, row, N_ATTR, deg_attr_ptr, k_attr, attr_mask)
    y_scaled = y * w_attr

    grad, out_mask = gather_rows(grad_ptr, grad_stride, dst_ptr, edge, layout_out, channel, valid, k_out, D_OUT)
    grad_scaled = grad
    if HAS_W_OUT:
        grad_scaled = grad * slot_weights(w_out_ptr, row, N_OUT, deg_out_ptr, k_out, out_mask)

    f_in, f_attr, f_out = load_factors(factors, k_in, k_attr, rank, k_out, RANK_P, D_OUT_P)
    projected_in = tl.dot(x_scaled, f_in, input_precision="ieee")
    projected_attr = tl.dot(y_scaled, f_attr, input_precision="ieee")
    pulled = tl.dot(grad_scaled, tl.trans(f_out), input_precision="ieee")
    product = projected_in * projected_attr
    if HAS_W_MID:
        w_mid = slot_weights(w_mid_ptr, row, N_MID, mid_map_ptr, rank, valid[:, None] & (rank < RANK)[None, :])
        if NEED_W_MID:
            _store_slot_sums(pulled * product, mid_map_ptr, RANK, RANK_P, N_MID_P, grad_w_mid_ptr, row, N_MID, valid)
        product = product * w_mid
        pulled = pulled * w_mid

    if NEED_W_OUT:
        unweighted = tl.dot(product, f_out, input_precision="ieee")
        _store_slot_sums(grad * unweighted, deg_out_ptr, D_OUT, D_OUT_P, N_OUT_P, grad_w_out_ptr, row, N_OUT, valid)
    if NEED_ATTR or NEED_W_ATTR:
        grad_attr_scaled = tl.dot(pulled * projected_in, tl.trans(f_attr), input_precision="ieee")
        if NEED_ATTR:
            per_channel = tl.reshape(grad_attr_scaled * w_attr, (BLOCK_EDGES, C_P, D_ATTR_P))
            per_edge = tl.sum(per_channel, axis=1)
            edges = tl.program_id(0).to(tl.int64) * BLOCK_EDGES + tl.arange(0, BLOCK_EDGES)
            mask = (edges < num_edges)[:, None] & (k_attr < D_ATTR)[None, :]
            tl.store(grad_attr_ptr + edges[:, None] * D_ATTR + k_attr[None, :], per_edge, mask=mask)
        if NEED_W_ATTR:
            values = grad_attr_scaled * y
            _store_slot_sums(values, deg_attr_ptr, D_ATTR, D_ATTR_P, N_ATTR_P, grad_w_attr_ptr, row, N_ATTR, valid)
    if NEED_W_IN:
        grad_in_scaled = tl.dot(pulled * projected_attr, tl.trans(f_in), input_precision="ieee")
        _store_slot_sums(grad_in_scaled * x, deg_in_ptr, D_IN, D_IN_P, N_IN_P, grad_w_in_ptr, row, N_IN, valid)
