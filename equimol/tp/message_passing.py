r"""Message passing through a tensor product: gather the senders, take the product, scatter-sum.

.. math:: m_i = \sum_{e = (j \to i)} \mathrm{TP}(x_j, y_e, w_e)

:class:`MessagePassing` is the part of :class:`~equimol.tp.interface.TensorProductBackend` that runs this sum:
:meth:`~MessagePassing.message_passing` checks the inputs once and hands them to the fused kernel chosen with
``kernel=`` (:mod:`equimol.tp.factored`) or to :meth:`~MessagePassing.reference_message_passing`. A backend
whose product works on features in a layout of its own (component-major: ``cg``'s ``edge`` strategy,
``cueq``) declares it with :meth:`~MessagePassing.product_layout`; the sum then permutes the layout per
node, before the gather and after the sum, not per edge.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from equimol.tp.checks import check_message_inputs


class MessagePassing(nn.Module):
    """Message passing of a tensor product; relies on the backend's ``forward``, ``irreps_out`` and kernel."""

    def product_layout(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(into, back)`` when the backend computes on features in a layout of its own, else None (the default).

        ``x1[:, into]`` is ``x1`` in that layout and ``z[:, back]`` an output ``z`` of
        :meth:`_product_in_layout` in e3nn's ``mul_ir`` layout (int64 ``[irreps_in1.dim]`` and
        ``[irreps_out.dim]``). Message passing then permutes per node, before the gather and after the
        sum, instead of per edge.
        """
        return None

    def _product_in_layout(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """:meth:`_product` with ``x1`` and the result in the layout of :meth:`product_layout`."""
        raise NotImplementedError

    def _sum_in_layout(
        self, nodes: Tensor, attrs: Tensor, weight: Tensor, src: Tensor, dst: Tensor, count: int
    ) -> Tensor:
        """``[count, irreps_out.dim]`` sums over ``dst`` of :meth:`_product_in_layout` of ``nodes[src]``, in
        the layout of :meth:`product_layout` (a backend may fuse the gather and the sum)."""
        messages = self._product_in_layout(nodes[src], attrs, weight)
        return messages.new_zeros(count, messages.shape[1]).index_add(0, dst, messages)

    def message_passing(
        self,
        node_features: torch.Tensor,
        edge_attrs: torch.Tensor,
        edge_weight: torch.Tensor | None,
        edge_src: torch.Tensor,
        edge_dst: torch.Tensor,
        num_nodes: int,
    ) -> torch.Tensor:
        """Gather senders, take the product with edge attributes and weights, scatter-sum.

        .. math:: m_i = \\sum_{e = (j \\to i)} \\mathrm{TP}(x_j, y_e, w_e)

        With ``kernel="torch"`` this is the plain torch reference (gather, :meth:`forward`,
        ``index_add``). With ``kernel="triton"`` the fused kernel registered through
        :func:`~equimol.tp.factored.register_message_kernel` computes the same sum from the backend's
        :meth:`factored_form`; ``deterministic=True`` asks it for a sorted-receiver segmented
        reduction instead of atomics. The inputs are checked here, once, for every kernel. No
        normalization by the neighbor count is applied here (the model does it).

        Args:
            node_features: ``[num_nodes, irreps_in1.dim]``.
            edge_attrs: ``[E, irreps_in2.dim]`` (spherical harmonics of the edge vectors).
            edge_weight: ``[E, weight_numel]`` per-edge weights, or None for the internal ones.
            edge_src: ``[E]`` int64 index of the sending node of each edge.
            edge_dst: ``[E]`` int64 index of the receiving node of each edge.
            num_nodes: number of nodes in the output.

        Returns:
            ``[num_nodes, irreps_out.dim]``.
        """
        weight = check_message_inputs(self, node_features, edge_attrs, edge_weight, edge_src, edge_dst)
        if self._message_kernel is not None:
            return self._message_kernel(self, node_features, edge_attrs, weight, edge_src, edge_dst, num_nodes)
        return self.reference_message_passing(node_features, edge_attrs, weight, edge_src, edge_dst, num_nodes)

    def reference_message_passing(
        self,
        node_features: torch.Tensor,
        edge_attrs: torch.Tensor,
        edge_weight: torch.Tensor | None,
        edge_src: torch.Tensor,
        edge_dst: torch.Tensor,
        num_nodes: int,
    ) -> torch.Tensor:
        """The path of :meth:`message_passing` without a fused kernel (gather, product, ``index_add``).

        Fused kernels call it for what they do not fuse (double backward). Same arguments and shapes. A
        backend with a :meth:`product_layout` converts the layout per node, not per edge.
        """
        layout = self.product_layout()
        if layout is None:
            messages = self(node_features[edge_src], edge_attrs, edge_weight)
            return messages.new_zeros(num_nodes, self.irreps_out.dim).index_add(0, edge_dst, messages)
        into, back = layout
        nodes = node_features.index_select(1, into)
        return self._sum_in_layout(nodes, edge_attrs, edge_weight, edge_src, edge_dst, num_nodes).index_select(1, back)
