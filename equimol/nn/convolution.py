r"""The equivariant convolution every message-passing layer starts with.

With node features ``h_j``, edge spherical harmonics ``Y(\hat r_e)``, radial basis ``b(r_e)`` and smooth
cutoff ``u(r_e)`` of edge ``e = (j \to i)``:

.. math::

    m_i = \frac{1}{\bar N} \sum_{e = (j \to i)} \mathrm{TP}\big(W_{up} h_j,\; Y(\hat r_e),\;
          u(r_e)\,\mathrm{MLP}(b(r_e))\big)

``TP`` is :func:`equimol.tp.TensorProduct` (any registered backend) with per-edge weights
``[E, weight_numel]`` from the radial MLP, summed by its ``message_passing``; ``\bar N`` is the average
neighbour count of the training data, so ``m_i`` has order-one size whatever the density.

:class:`ConvolutionLayer` is the base of the layers (:class:`~equimol.nn.interaction.InteractionBlock`,
:class:`~equimol.nn.product_basis.ProductBasisInteraction`): its ``forward`` computes ``m`` and hands it to
the layer's :meth:`~ConvolutionLayer.update`. ``W_up``, ``TP`` and the MLP are attributes of the layer
itself (``linear_up``, ``tensor_product``, ``radial_mlp``), so the layers' state-dict keys, and with them
model files, do not depend on where this code lives.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from equimol.nn.linear import EquivariantLinear
from equimol.nn.radial import RadialMLP
from equimol.tp import TensorProduct


class ConvolutionLayer(nn.Module):
    """A message-passing layer: the convolution of the module docstring, then the subclass's :meth:`update`.

    Subclasses call :meth:`build_convolution` in their constructor and implement :meth:`update`.
    """

    def build_convolution(
        self,
        irreps_in: o3.Irreps,
        sh_lmax: int,
        irreps_out: o3.Irreps,
        radial: tuple[int, list[int]],
        avg_num_neighbors: float,
        tp_backend: str,
        tp_options: dict | None,
    ) -> None:
        """Create ``linear_up`` (``irreps_in`` -> ``irreps_in``), ``tensor_product`` (``irreps_in`` x spherical
        harmonics up to ``sh_lmax`` -> ``irreps_out``, float64 constants) and ``radial_mlp``.

        ``radial`` is ``(num_radial_basis, radial_mlp_hidden)``; ``tp_options`` go to the backend.
        """
        num_radial_basis, radial_mlp_hidden = radial
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.linear_up = EquivariantLinear(irreps_in, irreps_in)
        self.tensor_product = TensorProduct(
            irreps_in,
            o3.Irreps.spherical_harmonics(sh_lmax),
            irreps_out,
            backend=tp_backend,
            internal_weights=False,
            dtype=torch.float64,
            **(tp_options or {}),
        )
        self.radial_mlp = RadialMLP(num_radial_basis, list(radial_mlp_hidden), self.tensor_product.weight_numel)

    def forward(
        self,
        node_features: torch.Tensor,
        edge_sh: torch.Tensor,
        radial_basis: torch.Tensor,
        envelope: torch.Tensor,
        sender: torch.Tensor,
        receiver: torch.Tensor,
        element_index: torch.Tensor | None = None,
        num_receivers: int | None = None,
    ) -> torch.Tensor:
        """One layer: :meth:`update` of the node features and their averaged messages ``m``.

        Args:
            node_features: ``[n, irreps_in.dim]``.
            edge_sh: ``[E, (sh_lmax + 1)^2]`` component-normalized spherical harmonics.
            radial_basis: ``[E, num_radial_basis]``.
            envelope: ``[E]`` smooth cutoff.
            sender, receiver: ``[E]`` int64.
            element_index: ``[n]`` int64 element of each node (needed by species-dependent layers).
            num_receivers: update only the first ``k`` nodes (every receiver must be among them; the others
                only send): a rank of ``pair_style equimol`` updates its owned atoms (:mod:`equimol.pt2_lammps`).

        Returns:
            ``[k, D]`` updated node features (``D`` set by the layer; ``k = n`` by default).
        """
        k = node_features.shape[0] if num_receivers is None else num_receivers
        edge_weight = self.radial_mlp(radial_basis, envelope)
        messages = self.tensor_product.message_passing(
            self.linear_up(node_features), edge_sh, edge_weight, sender, receiver, k
        )
        elements = None if element_index is None else element_index[:k]
        return self.update(node_features[:k], messages / self.avg_num_neighbors, elements)

    def update(
        self, node_features: torch.Tensor, messages: torch.Tensor, element_index: torch.Tensor | None
    ) -> torch.Tensor:
        """The layer's new node features from the old ones ``[n, irreps_in.dim]`` and ``m`` ``[n, irreps_out.dim]``."""
        raise NotImplementedError
