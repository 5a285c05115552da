r"""Triton kernels of the fused message operation on a factored form (:mod:`equimol.tp.factored`).

Per edge ``e`` and channel ``c`` a factored product is

.. math::

    o_{e,c,k} = w^{\mathrm{out}}_{e,c,\deg(k)} \sum_r F^{\mathrm{out}}_{r k}\, w^{\mathrm{mid}}_{e,c,\pi(r)}
        \Big(\sum_i x_{s(e),c,i}\, w^{\mathrm{in}}_{e,c,\deg(i)} F^{\mathrm{in}}_{i r}\Big)
        \Big(\sum_j y_{e,j}\, w^{\mathrm{attr}}_{e,c,\deg(j)} F^{\mathrm{attr}}_{j r}\Big)

and the message ``m_n = sum_{e: t(e) = n} o_e``: three small dense products with an elementwise
product over the ``R`` terms in the middle, any weight group optional (``pi(r)`` the ``w^mid``
slot of term ``r``). ``s(e)`` is the gathered row, ``t(e)`` the row scattered into.

A program owns ``BLOCK_EDGES x C_P`` rows ``(edge, channel)`` and the whole ``[rows, R]``
intermediate stays in registers: nothing per edge is written to memory. The reduction into the
receivers is either

* **atomic** (:func:`message_atomic_kernel`): one program per block of edges, ``atomic_add`` into
  the output. Summation order varies between runs on a GPU (floating-point non-associativity).
* **deterministic** (:func:`message_segmented_kernel`): edges sorted by receiver, one program per
  receiver loops over its segment in a fixed order and writes its row once. Bitwise reproducible
  for a fixed launch configuration (this kernel is never autotuned for that reason).

The same kernels compute the gradient with respect to the gathered features: swap the roles of
``F^in`` and ``F^out`` (transposed), of ``w^in`` and ``w^out``, and of ``s`` and ``t``.
:mod:`equimol.kernels.edge_gradients` gives the per-edge gradients (``y`` and the weight groups);
they need no reduction across programs. Products use ``input_precision="ieee"`` so float32 stays
float32 on GPUs that would otherwise round ``tl.dot`` inputs to TF32.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def autotune_configs() -> list[triton.Config]:
    """Launch configurations tried by the autotuner: one under the interpreter, a sweep on a GPU."""
    if INTERPRETING:
        # The interpreter runs programs one after another; autotuning with several configs fails there.
        return [triton.Config({"BLOCK_EDGES": 4}, num_warps=4)]
    return [triton.Config({"BLOCK_EDGES": b}, num_warps=w) for b in (1, 2, 4, 8, 16) for w in (4, 8)]


#: Largest ``rows x RANK_P`` intermediate a program keeps in registers before spilling (elements).
REGISTER_BUDGET = 32768


def prune_configs(configs, named_args, **kwargs):
    """Keep configs whose row block ``BLOCK_EDGES * C_P`` has at least 16 rows (``tl.dot``) and whose
    ``[rows, RANK_P]`` intermediate fits :data:`REGISTER_BUDGET`; if none does, the smallest legal block."""

    def argument(name):
        return kwargs.get(name, named_args.get(name) if isinstance(named_args, dict) else None)

    channels, rank = argument("C_P"), argument("RANK_P") or 16
    if channels is None:
        return configs
    legal = [c for c in configs if c.kwargs["BLOCK_EDGES"] * channels >= 16]
    kept = [c for c in legal if c.kwargs["BLOCK_EDGES"] * channels * rank <= REGISTER_BUDGET]
    if kept:
        return kept
    smallest = min(c.kwargs["BLOCK_EDGES"] for c in legal) if legal else max(c.kwargs["BLOCK_EDGES"] for c in configs)
    return [c for c in configs if c.kwargs["BLOCK_EDGES"] == smallest]


def segmented_block_edges(channels_padded: int) -> int:
    """Fixed edge block of the deterministic kernel: the fewest edges giving the 16 rows ``tl.dot`` needs."""
    return max(1, 16 // channels_padded)


@triton.jit
def _rows_message(
    edge,
    channel,
    valid,
    feat_ptr,
    feat_stride,
    gather_ptr,
    base_in_ptr,
    stride_in_ptr,
    attr_ptr,
    w_in_ptr,
    w_attr_ptr,
    w_out_ptr,
    deg_in_ptr,
    deg_attr_ptr,
    deg_out_ptr,
    w_mid_ptr,
    mid_map_ptr,
    f_in_ptr,
    f_attr_ptr,
    f_out_ptr,
    C,
    D_IN,
    D_ATTR,
    D_OUT,
    N_IN,
    N_ATTR,
    N_OUT,
    RANK,
    N_MID,
    D_IN_P: tl.constexpr,
    D_ATTR_P: tl.constexpr,
    RANK_P: tl.constexpr,
    D_OUT_P: tl.constexpr,
    HAS_W_IN: tl.constexpr,
    HAS_W_ATTR: tl.constexpr,
    HAS_W_OUT: tl.constexpr,
    HAS_W_MID: tl.constexpr,
):
    """Messages ``o`` ``[rows, D_OUT_P]`` of the rows ``(edge, channel)``; invalid rows give zeros."""
    k_in = tl.arange(0, D_IN_P)
    k_attr = tl.arange(0, D_ATTR_P)
    k_out = tl.arange(0, D_OUT_P)
    rank = tl.arange(0, RANK_P)
    row = edge * C + channel
    node = tl.load(gather_ptr + edge, mask=valid, other=0)
    columns = tl.load(base_in_ptr + k_in)[None, :] + channel[:, None] * tl.load(stride_in_ptr + k_in)[None, :]
    in_mask = valid[:, None] & (k_in < D_IN)[None, :]
    x = tl.load(feat_ptr + node[:, None] * feat_stride + columns, mask=in_mask, other=0.0)
    if HAS_W_IN:
        w_columns = row[:, None] * N_IN + tl.load(deg_in_ptr + k_in)[None, :]
        x = x * tl.load(w_in_ptr + w_columns, mask=in_mask, other=0.0)
    attr_mask = valid[:, None] & (k_attr < D_ATTR)[None, :]
    y = tl.load(attr_ptr + edge[:, None] * D_ATTR + k_attr[None, :], mask=attr_mask, other=0.0)
    if HAS_W_ATTR:
        w_columns = row[:, None] * N_ATTR + tl.load(deg_attr_ptr + k_attr)[None, :]
        y = y * tl.load(w_attr_ptr + w_columns, mask=attr_mask, other=0.0)
    f_in = tl.load(f_in_ptr + k_in[:, None] * RANK_P + rank[None, :])
    f_attr = tl.load(f_attr_ptr + k_attr[:, None] * RANK_P + rank[None, :])
    f_out = tl.load(f_out_ptr + rank[:, None] * D_OUT_P + k_out[None, :])
    product = tl.dot(x, f_in, input_precision="ieee") * tl.dot(y, f_attr, input_precision="ieee")
    if HAS_W_MID:
        mid_columns = row[:, None] * N_MID + tl.load(mid_map_ptr + rank)[None, :]
        product = product * tl.load(w_mid_ptr + mid_columns, mask=valid[:, None] & (rank < RANK)[None, :], other=0.0)
    message = tl.dot(product, f_out, input_precision="ieee")
    if HAS_W_OUT:
        out_mask = valid[:, None] & (k_out < D_OUT)[None, :]
        w_columns = row[:, None] * N_OUT + tl.load(deg_out_ptr + k_out)[None, :]
        message = message * tl.load(w_out_ptr + w_columns, mask=out_mask, other=0.0)
    return message


@triton.autotune(
    configs=autotune_configs(),
    key=["C_P", "D_IN_P", "D_ATTR_P", "RANK_P", "D_OUT_P", "HAS_W_IN", "HAS_W_ATTR", "HAS_W_OUT", "HAS_W_MID"],
    prune_configs_by={"early_config_prune": prune_configs},
    reset_to_zero=["out_ptr"],
)
@triton.jit
def message_atomic_kernel(
    feat_ptr,
    feat_stride,
    gather_ptr,
    base_in_ptr,
    stride_in_ptr,
    attr_ptr,
    w_in_ptr,
    w_attr_ptr,
    w_out_ptr,
    deg_in_ptr,
    deg_attr_ptr,
    deg_out_ptr,
    w_mid_ptr,
    mid_map_ptr,
    f_in_ptr,
    f_attr_ptr,
    f_out_ptr,
    scatter_ptr,
    out_ptr,
    out_stride,
    base_out_ptr,
    stride_out_ptr,
    num_edges,
    C,
    D_IN,
    D_ATTR,
    D_OUT,
    N_IN,
    N_ATTR,
    N_OUT,
    RANK,
    N_MID,
    C_P: tl.constexpr,
    D_IN_P: tl.constexpr,
    D_ATTR_P: tl.constexpr,
    RANK_P: tl.constexpr,
    D_OUT_P: tl.constexpr,
    HAS_W_IN: tl.constexpr,
    HAS_W_ATTR: tl.constexpr,
    HAS_W_OUT: tl.constexpr,
    HAS_W_MID: tl.constexpr,
    BLOCK_EDGES: tl.constexpr,
):
    rows = tl.arange(0, BLOCK_EDGES * C_P)
    edge = tl.program_id(0).to(tl.int64) * BLOCK_EDGES + rows // C_P
    channel = rows % C_P
    valid = (edge < num_edges) & (channel < C)
    message = _rows_message(
        edge, channel, valid, feat_ptr, feat_stride, gather_ptr, base_in_ptr, stride_in_ptr, attr_ptr,
        w_in_ptr, w_attr_ptr, w_out_ptr, deg_in_ptr, deg_attr_ptr, deg_out_ptr, w_mid_ptr, mid_map_ptr,
        f_in_ptr, f_attr_ptr, f_out_ptr, C, D_IN, D_ATTR, D_OUT, N_IN, N_ATTR, N_OUT, RANK, N_MID,
        D_IN_P, D_ATTR_P, RANK_P, D_OUT_P, HAS_W_IN, HAS_W_ATTR, HAS_W_OUT, HAS_W_MID,
    )  # fmt: skip
    k_out = tl.arange(0, D_OUT_P)
    target = tl.load(scatter_ptr + edge, mask=valid, other=0)
    columns = tl.load(base_out_ptr + k_out)[None, :] + channel[:, None] * tl.load(stride_out_ptr + k_out)[None, :]
    out_mask = valid[:, None] & (k_out < D_OUT)[None, :]
    tl.atomic_add(out_ptr + target[:, None] * out_stride + columns, message, mask=out_mask)


@triton.jit
def message_segmented_kernel(
    feat_ptr,
    feat_stride,
    gather_ptr,
    base_in_ptr,
    stride_in_ptr,
    attr_ptr,
    w_in_ptr,
    w_attr_ptr,
    w_out_ptr,
    deg_in_ptr,
    deg_attr_ptr,
    deg_out_ptr,
    w_mid_ptr,
    mid_map_ptr,
    f_in_ptr,
    f_attr_ptr,
    f_out_ptr,
    order_ptr,
    segment_ptr,
    out_ptr,
    out_stride,
    base_out_ptr,
    stride_out_ptr,
    C,
    D_IN,
    D_ATTR,
    D_OUT,
    N_IN,
    N_ATTR,
    N_OUT,
    RANK,
    N_MID,
    C_P: tl.constexpr,
    D_IN_P: tl.constexpr,
    D_ATTR_P: tl.constexpr,
    RANK_P: tl.constexpr,
    D_OUT_P: tl.constexpr,
    HAS_W_IN: tl.constexpr,
    HAS_W_ATTR: tl.constexpr,
    HAS_W_OUT: tl.constexpr,
    HAS_W_MID: tl.constexpr,
    BLOCK_EDGES: tl.constexpr,
):
    receiver = tl.program_id(0).to(tl.int64)
    start = tl.load(segment_ptr + receiver)
    stop = tl.load(segment_ptr + receiver + 1)
    rows = tl.arange(0, BLOCK_EDGES * C_P)
    channel = rows % C_P
    accumulator = tl.zeros((BLOCK_EDGES * C_P, D_OUT_P), dtype=out_ptr.dtype.element_ty)
    for position in range(start, stop, BLOCK_EDGES):
        slot = position + rows // C_P
        valid = (slot < stop) & (channel < C)
        edge = tl.load(order_ptr + slot, mask=valid, other=0)
        accumulator += _rows_message(
            edge, channel, valid, feat_ptr, feat_stride, gather_ptr, base_in_ptr, stride_in_ptr, attr_ptr,
            w_in_ptr, w_attr_ptr, w_out_ptr, deg_in_ptr, deg_attr_ptr, deg_out_ptr, w_mid_ptr, mid_map_ptr,
            f_in_ptr, f_attr_ptr, f_out_ptr, C, D_IN, D_ATTR, D_OUT, N_IN, N_ATTR, N_OUT, RANK, N_MID,
            D_IN_P, D_ATTR_P, RANK_P, D_OUT_P, HAS_W_IN, HAS_W_ATTR, HAS_W_OUT, HAS_W_MID,
        )  # fmt: skip
    total = tl.sum(tl.reshape(accumulator, (BLOCK_EDGES, C_P, D_OUT_P)), axis=0)
    channels = tl.arange(0, C_P)
    k_out = tl.arange(0, D_OUT_P)
    columns = tl.load(base_out_ptr + k_out)[None, :] + channels[:, None] * tl.load(stride_out_ptr + k_out)[None, :]
    out_mask = (channels < C)[:, None] & (k_out < D_OUT)[None, :]
    tl.store(out_ptr + receiver * out_stride + columns, total, mask=out_mask)
