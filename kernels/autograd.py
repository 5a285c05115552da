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
from equimol.kernels.launch import Message

#: ``reference(node_features, edge_attrs, w_in, w_attr, w_out, w_mid) -> [num_nodes, irreps_out.dim]``,
#: the torch path of the same message (differentiable), used for double backward.
TorchReference = Callable[..., torch.Tensor]


class _FusedMessage(torch.autograd.Function):
    """Autograd sees the tensors one by one; ``template`` carries the product and the graph."""

    @staticmethod
    def forward(ctx, template: Message, deterministic: bool, reference: TorchReference, *tensors: torch.Tensor):
        node_features, edge_attrs, *weights = tensors
        inputs = Message(template.product, node_features, edge_attrs, tuple(weights), *_graph(template))
        ctx.save_for_backward(*tensors)
        ctx.template, ctx.deterministic, ctx.reference = template, deterministic, reference
        return launch.message(inputs, deterministic)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        tensors = ctx.saved_tensors
        needs = ctx.needs_input_grad[3:]
        if torch.is_grad_enabled():
            return (None, None, None, *_torch_backward(ctx.reference, grad_out, needs, tensors))
        node_features, edge_attrs, *weights = tensors
        inputs = Message(ctx.template.product, node_features, edge_attrs, tuple(weights), *_graph(ctx.template))
        grad_nodes = launch.message(inputs.adjoint(grad_out), ctx.deterministic) if needs[0] else None
        return None, None, None, grad_nodes, *launch.edge_gradients(inputs, grad_out, needs[1:])


def _graph(inputs: Message) -> tuple[torch.Tensor, torch.Tensor, int]:
    return inputs.edge_src, inputs.edge_dst, inputs.num_nodes


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


def fused_message_passing(inputs: Message, deterministic: bool, reference: TorchReference) -> torch.Tensor:
    """Differentiable fused message passing of ``inputs`` (:class:`~equimol.kernels.launch.Message`).

    Args:
        inputs: the factored product (:class:`~equimol.tp.factored.FactoredProduct`), ``node_features``
            ``[V, irreps_in.dim]``, ``edge_attrs`` ``[E, irreps_attr.dim]``, the ``[E, C, n]`` weights
            ``(w_in, w_attr, w_out, w_mid)`` or None (see :mod:`equimol.kernels.launch`; ``w_mid`` needs
            ``product.rank_map``), sender and receiver ``[E]`` of each edge, and the rows of the result.
        deterministic: sorted segmented reductions (forward and node-feature gradient) instead of atomics.
        reference: the torch path, called as
            ``reference(node_features, edge_attrs, w_in, w_attr, w_out, w_mid)`` for double backward.

    Returns:
        ``[num_nodes, irreps_out.dim]``.
    """
    return _FusedMessage.apply(
        inputs, deterministic, reference, inputs.node_features, inputs.edge_attrs, *inputs.weights
    )
