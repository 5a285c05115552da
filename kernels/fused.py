"""The one fused message kernel: every backend with a factored form gets it, none is named here.

``kernel="triton"`` on a tensor product (``TensorProduct(..., kernel="triton")``) runs
:func:`factored_message_passing`: the backend's :meth:`factored_form
<equimol.tp.interface.TensorProductBackend.factored_form>` (cached until a buffer changes) gives the
factors, the weight split and the rank map; the flat per-edge weights, already checked by
``message_passing``, are split into the kernel's ``[E, C, n]`` groups, and
:func:`~equimol.kernels.autograd.fused_message_passing` runs the gather-product-scatter, its first
derivatives on Triton, and its double backward on the backend's own torch path.
"""

from __future__ import annotations

import torch
from equimol.kernels.autograd import fused_message_passing
from equimol.kernels.launch import Message

from equimol.tp.factored import factored_form_of, register_message_kernel


@register_message_kernel("triton")
def factored_message_passing(
    tp,
    node_features: torch.Tensor,
    edge_attrs: torch.Tensor,
    weight: torch.Tensor,
    edge_src: torch.Tensor,
    edge_dst: torch.Tensor,
    num_nodes: int,
) -> torch.Tensor:
    """``m_n = sum_{e: dst(e) = n} tp(x_{src(e)}, y_e, w_e)``, fused, for any backend with a factored form.

    Args:
        tp: a tensor product whose ``factored_form()`` is not None.
        node_features: ``[num_senders, irreps_in1.dim]``; edge_attrs: ``[E, irreps_in2.dim]``.
        weight: ``[E, weight_numel]`` (checked and expanded by ``message_passing``).
        edge_src, edge_dst: ``[E]`` int64; num_nodes: rows of the result.

    Returns:
        ``[num_nodes, irreps_out.dim]``, equal to the torch path up to summation order.
    """
    product = factored_form_of(tp)
    if product is None:
        raise ValueError(f"backend {tp.name!r} provides no factored form; use kernel='torch'")
    w_in, w_attr, w_out, w_mid = product.split_weight(weight)

    def reference(features, attrs, w_in, w_attr, w_out, w_mid):
        flat = product.join_weight(w_in, w_attr, w_out, w_mid)
        return tp.reference_message_passing(features, attrs, flat, edge_src, edge_dst, num_nodes)

    inputs = Message(product, node_features, edge_attrs, (w_in, w_attr, w_out, w_mid), edge_src, edge_dst, num_nodes)
    return fused_message_passing(inputs, tp.deterministic, reference)
