r"""Differentiable fused message passing: Triton forward and backward, torch for double backward.

:func:`fused_message_passing` returns ``m = sum_{e -> n} o(x_{src(e)}, y_e, w_e)`` (see
:mod:`equimol.tp.factored`). Its gradients:

* **first derivatives** (what forces need: ``dE/dx``, ``dE/dy``, ``dE/dw`` with ``create_graph=False``)
  run on Triton kernels: the gradient with respect to the node features is the same fused kernel on
  the adjoint product (gathered at the receivers, scattered into the senders, atomic or
  sender-sorted deterministic), the per-edge gradients (``y`` and weights) one more kernel with no
  reduction across programs;
* **double backward** (force training: ``create_graph=True``) falls back to the torch path. When the
  backward is asked to build a graph, it recomputes the message with the caller's torch reference
  (the backend's own ``forward`` + ``index_add``, i.e. exactly ``kernel="torch"``) and differentiates
  that with ``create_graph=True``. Results equal the torch path's; the speed is the torch path's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from equimol.kernels import launch

from equimol.tp.factored import FactoredProduct

#: ``reference(node_features, edge_attrs, w_in, w_attr, w_out, w_mid) -> [num_nodes, irreps_out.dim]``,
#: the torch path of the same message (differentiable), used for double backward.
TorchReference = Callable[..., torch.Tensor]


class _FusedMessage(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        node_features: torch.Tensor,
        edge_attrs: torch.Tensor,
        w_in: torch.Tensor | None,
        w_attr: torch.Tensor | None,
        w_out: torch.Tensor | None,
        w_mid: torch.Tensor | None,
        product: FactoredProduct,
        edge_src: torch.Tensor,
        edge_dst: torch.Tensor,
        num_nodes: int,
        deterministic: bool,
        reference: TorchReference,
    ) -> torch.Tensor:
        ctx.save_for_backward(node_features, edge_attrs, w_in, w_attr, w_out, w_mid, edge_src, edge_dst)
        ctx.product, ctx.deterministic, ctx.reference = product, deterministic, reference
        return launch.message(
            product,
            node_features,
            edge_attrs,
            w_in,
            w_attr,
            w_out,
            edge_src,
            edge_dst,
            num_nodes,
            deterministic,
            w_mid=w_mid,
        )

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        node_features, edge_attrs, w_in, w_attr, w_out, w_mid, edge_src, edge_dst = ctx.saved_tensors
        needs = ctx.needs_input_grad[:6]
        if torch.is_grad_enabled():
            return (*_torch_backward(ctx.reference, grad_out, needs, ctx.saved_tensors[:6]), *(None,) * 6)
        grad_nodes = None
        if needs[0]:
            grad_nodes = launch.message(
                ctx.product.transposed(),
                grad_out,
                edge_attrs,
                w_out,
                w_attr,
                w_in,
                edge_dst,
                edge_src,
                node_features.shape[0],
                ctx.deterministic,
                w_mid=w_mid,
            )
        edge_grads = launch.edge_gradients(
            ctx.product,
            grad_out,
            node_features,
            edge_attrs,
            w_in,
            w_attr,
            w_out,
            edge_src,
            edge_dst,
            needs[1:],
            w_mid=w_mid,
        )
        return grad_nodes, *edge_grads, *(None,) * 6


def _torch_backward(reference: TorchReference, grad_out: torch.Tensor, needs, inputs) -> list[torch.Tensor | None]:
    """First derivatives that are themselves differentiable, from the torch reference."""
    wanted = [i for i, need in enumerate(needs) if need]
    with torch.enable_grad():
        out = reference(*inputs)
        grads = torch.autograd.grad(out, [inputs[i] for i in wanted], grad_out, create_graph=True, allow_unused=True)
    result: list[torch.Tensor | None] = [None] * len(inputs)
    for i, grad in zip(wanted, grads):
        result[i] = torch.zeros_like(inputs[i]) if grad is None else grad
    return result


def fused_message_passing(
    product: FactoredProduct,
    node_features: torch.Tensor,
    edge_attrs: torch.Tensor,
    w_in: torch.Tensor | None,
    w_attr: torch.Tensor | None,
    w_out: torch.Tensor | None,
    edge_src: torch.Tensor,
    edge_dst: torch.Tensor,
    num_nodes: int,
    deterministic: bool,
    reference: TorchReference,
    w_mid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Differentiable fused message passing.

    Args:
        product: the factored product (:class:`~equimol.tp.factored.FactoredProduct`).
        node_features: ``[V, irreps_in.dim]``; edge_attrs: ``[E, irreps_attr.dim]``.
        w_in, w_attr, w_out: ``[E, C, n]`` weights or None (see :mod:`equimol.kernels.launch`).
        edge_src, edge_dst: ``[E]`` sender and receiver of each edge.
        num_nodes: rows of the result.
        deterministic: sorted segmented reductions (forward and node-feature gradient) instead of atomics.
        reference: the torch path, called as
            ``reference(node_features, edge_attrs, w_in, w_attr, w_out, w_mid)`` for double backward.
        w_mid: ``[E, C, n]`` weights of the rank-one terms (needs ``product.rank_map``), or None.

    Returns:
        ``[num_nodes, irreps_out.dim]``.
    """
    return _FusedMessage.apply(
        node_features,
        edge_attrs,
        w_in,
        w_attr,
        w_out,
        w_mid,
        product,
        edge_src,
        edge_dst,
        num_nodes,
        deterministic,
        reference,
    )
