r"""Fused Triton message passing for the ``cp`` backend (CP-decomposed tensor product).

The ``cp`` backend (:class:`equimol.tp.cp.CPTensorProduct`) computes, per edge ``e`` and channel ``u``,

.. math:: z_{e,u,k} = w_{e,u} \sum_r C_{rk}\, \Big(\sum_i x_{s(e),u,i} A_{ir}\Big) \Big(\sum_j y_{e,j} B_{jr}\Big)

with factors ``A [d1, R]``, ``B [d2, R]``, ``C [R, d3]`` over the channel-major components and
one weight per channel shared by every path (``weight_numel = C``). That is the factored form
of :mod:`equimol.kernels.factored` with ``F_in = A``, ``F_attr = B``, ``F_out = C`` and
``w_out = w`` (one slot per channel); the message ``m_n = sum_{e: dst(e) = n} z_e`` is one kernel.

Per-path weights (``weight_sharing=False``) are not fused: asking for them with
``kernel="triton"`` raises a ValueError naming the option (use ``kernel="torch"`` there).
"""

from __future__ import annotations

import torch
from equimol.kernels.autograd import fused_message_passing, per_edge_weight
from equimol.kernels.launch import FactoredProduct

from equimol.tp import register_message_kernel


@register_message_kernel("cp", "triton")
def cp_message_passing(
    tp,
    node_features: torch.Tensor,
    edge_attrs: torch.Tensor,
    edge_weight: torch.Tensor | None,
    edge_src: torch.Tensor,
    edge_dst: torch.Tensor,
    num_nodes: int,
) -> torch.Tensor:
    """``m_n = sum_{e: dst(e) = n} tp(x_{src(e)}, y_e, w_e)`` for a ``cp`` tensor product, fused.

    Args:
        tp: a ``CPTensorProduct`` with path-weight sharing.
        node_features: ``[num_senders, irreps_in1.dim]``; edge_attrs: ``[E, irreps_in2.dim]``.
        edge_weight: ``[E, C]``, ``[C]`` or None (internal weights).
        edge_src, edge_dst: ``[E]`` int64; num_nodes: rows of the result.

    Returns:
        ``[num_nodes, irreps_out.dim]``, equal to the torch path up to summation order.
    """
    if not getattr(tp, "weight_sharing", True):
        raise ValueError(
            "kernel='triton' fuses the cp backend with path-weight sharing only; this one was built with "
            "weight_sharing=False (per-path weights): use kernel='torch' for it"
        )
    edges, channels = edge_src.shape[0], tp.channels
    factors = (tp.A, tp.B, tp.C)
    for name, tensor in (("node_features", node_features), ("edge_attrs", edge_attrs)):
        if tensor.dtype != factors[0].dtype:
            raise ValueError(f"{name} is {tensor.dtype} but the cp tensor product is {factors[0].dtype}; cast one")
    weight = per_edge_weight(tp, edge_weight, edges)
    product = FactoredProduct(tp.irreps_in1, tp.irreps_in2, tp.irreps_out, *factors)

    def reference(features, attrs, _w_in, _w_attr, w_out):
        messages = tp(features[edge_src], attrs, w_out.reshape(edges, channels))
        return messages.new_zeros(num_nodes, tp.irreps_out.dim).index_add(0, edge_dst, messages)

    return fused_message_passing(
        product,
        node_features,
        edge_attrs,
        None,
        None,
        weight.reshape(edges, channels, 1),
        edge_src,
        edge_dst,
        num_nodes,
        tp.deterministic,
        reference,
    )
