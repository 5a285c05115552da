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

* **atomic** (:func:`message_atomic_kernel`, ``SEGMENTED=False``): one program per block of edges,
  ``atomic_add`` into the output. Summation order varies between runs on a GPU (floating-point
  non-associativity).
* **deterministic** (:func:`message_kernel` with ``SEGMENTED=True``): edges sorted by receiver, one
  program per receiver loops over its segment in a fixed order and writes its row once. Bitwise
  reproducible for a fixed launch configuration (this form is never autotuned for that reason).

Both are one kernel, :func:`message_kernel`; :data:`message_atomic_kernel` is its autotuned
launcher. Arguments come in groups shared with :mod:`equimol.kernels.edge_gradients` (tuples, built
once by :mod:`equimol.kernels.launch`): ``layout_in``/``layout_out`` the ``(base, stride)`` column
maps, ``weights`` ``(w_in, w_attr, w_out, w_mid)``, ``maps`` ``(deg_in, deg_attr, deg_out,
mid_map)``, ``factors`` ``(F_in, F_attr, F_out)`` (padded) and ``sizes`` ``(C, D_IN, D_ATTR, D_OUT,
N_IN, N_ATTR, N_OUT, RANK, N_MID)``.

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
def columns_of(layout, channel, k):
    """Mul_ir columns ``[rows, K]`` of channel-major components ``k`` of each row's ``channel``."""
    base_ptr, stride_ptr = layout
    return tl.load(base_ptr + k)[None, :] + channel[:, None] * tl.load(stride_ptr + k)[None, :]


@triton.jit
def gather_rows(ptr, stride, index_ptr, edge, layout, channel, valid, k, D):
    """Rows ``ptr[index[edge], columns]`` ``[rows, K]`` (zero where invalid) and their mask."""
    node = tl.load(index_ptr + edge, mask=valid, other=0)
    mask = valid[:, None] & (k < D)[None, :]
    return tl.load(ptr + node[:, None] * stride + columns_of(layout, channel, k), mask=mask, other=0.0), mask


@triton.jit
def slot_weights(w_ptr, row, N, slot_ptr, k, mask):
    """Weights ``w[row, slot[k]]`` ``[rows, K]`` of a ``[rows, N]`` weight group read through a slot map."""
    return tl.load(w_ptr + row[:, None] * N + tl.load(slot_ptr + k)[None, :], mask=mask, other=0.0)


@triton.jit
def load_factors(factors, k_in, k_attr, rank, k_out, RANK_P: tl.constexpr, D_OUT_P: tl.constexpr):
    """The padded factors ``F_in [D_IN_P, RANK_P]``, ``F_attr [D_ATTR_P, RANK_P]``, ``F_out [RANK_P, D_OUT_P]``."""
    f_in_ptr, f_attr_ptr, f_out_ptr = factors
    f_in = tl.load(f_in_ptr + k_in[:, None] * RANK_P + rank[None, :])
    f_attr = tl.load(f_attr_ptr + k_attr[:, None] * RANK_P + rank[None, :])
    return f_in, f_attr, tl.load(f_out_ptr + rank[:, None] * D_OUT_P + k_out[None, :])


@triton.jit
def message_kernel(
    feat_ptr,
    feat_stride,
    gather_ptr,
    layout_in,
    attr_ptr,
    weights,
    maps,
    factors,
    sizes,
    scatter_ptr,
    order_ptr,
    segment_ptr,
    num_edges,
    out_ptr,
    out_stride,
    layout_out,
    C_P: tl.constexpr,
    D_IN_P: tl.constexpr,
    D_ATTR_P: tl.constexpr,
    RANK_P: tl.constexpr,
    D_OUT_P: tl.constexpr,
    HAS_W_IN: tl.constexpr,
    HAS_W_ATTR: tl.constexpr,
    HAS_W_OUT: tl.constexpr,
    HAS_W_MID: tl.constexpr,
    SEGMENTED: tl.constexpr,
    BLOCK_EDGES: tl.constexpr,
):
    """``out[t(e)] += o_e`` over blocks of ``BLOCK_EDGES`` edges (rows ``(edge, channel)``).

    Atomic: program ``p`` owns edges ``[p BLOCK_EDGES, (p + 1) BLOCK_EDGES)`` (one block, receivers
    ``scatter_ptr``) and adds its messages with ``atomic_add``. Segmented: program ``n`` owns the
    edges ``order[segment[n]:segment[n + 1]]`` of receiver ``n``, sums their blocks in order and
    stores its row once.
    """
    C, D_IN, D_ATTR, D_OUT, N_IN, N_ATTR, N_OUT, RANK, N_MID = sizes
    w_in_ptr, w_attr_ptr, w_out_ptr, w_mid_ptr = weights
    deg_in_ptr, deg_attr_ptr, deg_out_ptr, mid_map_ptr = maps
    rows = tl.arange(0, BLOCK_EDGES * C_P)
    channel = rows % C_P
    k_in = tl.arange(0, D_IN_P)
    k_attr = tl.arange(0, D_ATTR_P)
    k_out = tl.arange(0, D_OUT_P)
    rank = tl.arange(0, RANK_P)
    f_in, f_attr, f_out = load_factors(factors, k_in, k_attr, rank, k_out, RANK_P, D_OUT_P)
    program = tl.program_id(0).to(tl.int64)
    if SEGMENTED:
        start = tl.load(segment_ptr + program)
        stop = tl.load(segment_ptr + program + 1)
    else:
        start = program * BLOCK_EDGES
        stop = tl.minimum(start + BLOCK_EDGES, num_edges)
    accumulator = tl.zeros((BLOCK_EDGES * C_P, D_OUT_P), dtype=out_ptr.dtype.element_ty)
    for position in range(start, stop, BLOCK_EDGES):
        slot = position + rows // C_P
        valid = (slot < stop) & (channel < C)
        edge = slot
        if SEGMENTED:
            edge = tl.load(order_ptr + slot, mask=valid, other=0)
        row = edge * C + channel
        x, in_mask = gather_rows(feat_ptr, feat_stride, gather_ptr, edge, layout_in, channel, valid, k_in, D_IN)
        if HAS_W_IN:
            x = x * slot_weights(w_in_ptr, row, N_IN, deg_in_ptr, k_in, in_mask)
        attr_mask = valid[:, None] & (k_attr < D_ATTR)[None, :]
        y = tl.load(attr_ptr + edge[:, None] * D_ATTR + k_attr[None, :], mask=attr_mask, other=0.0)
        if HAS_W_ATTR:
            y = y * slot_weights(w_attr_ptr, row, N_ATTR, deg_attr_ptr, k_attr, attr_mask)
        product = tl.dot(x, f_in, input_precision="ieee") * tl.dot(y, f_attr, input_precision="ieee")
        if HAS_W_MID:
            mid_mask = valid[:, None] & (rank < RANK)[None, :]
            product = product * slot_weights(w_mid_ptr, row, N_MID, mid_map_ptr, rank, mid_mask)
        message = tl.dot(product, f_out, input_precision="ieee")
        out_mask = valid[:, None] & (k_out < D_OUT)[None, :]
        if HAS_W_OUT:
            message = message * slot_weights(w_out_ptr, row, N_OUT, deg_out_ptr, k_out, out_mask)
        if SEGMENTED:
            accumulator += message
        else:
            target = tl.load(scatter_ptr + edge, mask=valid, other=0)
            columns = columns_of(layout_out, channel, k_out)
            tl.atomic_add(out_ptr + target[:, None] * out_stride + columns, message, mask=out_mask)
    if SEGMENTED:
        total = tl.sum(tl.reshape(accumulator, (BLOCK_EDGES, C_P, D_OUT_P)), axis=0)
        channels = tl.arange(0, C_P)
        out_mask = (channels < C)[:, None] & (k_out < D_OUT)[None, :]
        tl.store(out_ptr + program * out_stride + columns_of(layout_out, channels, k_out), total, mask=out_mask)


#: :func:`message_kernel` autotuned over :func:`autotune_configs` (the atomic form, ``SEGMENTED=False``).
message_atomic_kernel = triton.autotune(
    configs=autotune_configs(),
    key=["C_P", "D_IN_P", "D_ATTR_P", "RANK_P", "D_OUT_P", "HAS_W_IN", "HAS_W_ATTR", "HAS_W_OUT", "HAS_W_MID"],
    prune_configs_by={"early_config_prune": prune_configs},
    reset_to_zero=["out_ptr"],
)(message_kernel)
