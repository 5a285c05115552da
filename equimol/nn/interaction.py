r"""One interaction (message-passing) block with a swappable tensor-product backend.

With node features ``h_i`` (``C x 0e + C x 1o + ... `` up to ``lmax``), edge spherical harmonics
``Y(\hat r_e)`` and the radial basis ``b(r_e)`` of edge ``e = (j \to i)``:

.. math::

    m_i = \frac{1}{\bar N} \sum_{e = (j \to i)} \mathrm{TP}\big(W_{up} h_j,\; Y(\hat r_e),\;
          u(r_e)\,\mathrm{MLP}(b(r_e))\big)

    h_i' = h_i + \mathrm{Gate}\big(W_{down}\, m_i + W_{self}\, h_i\big)

``TP`` is :func:`equimol.tp.TensorProduct` with ``backend = tp_backend`` (``cg``, ``gaunt``, ``cp``) and
per-edge weights ``[E, weight_numel]``; ``\bar N`` is the average neighbor count of the training data
(so the sum has order-one size whatever the density); ``W`` are :class:`EquivariantLinear` maps, the
self-interaction ``W_self`` is linear, and the residual keeps the block near identity at initialisation.
Every operation is equivariant, so ``h'`` transforms like ``h``.
"""

from __future__ import annotations

import torch

from equimol.nn.convolution import ConvolutionLayer
from equimol.nn.gate import Gate
from equimol.nn.linear import EquivariantLinear, natural_irreps
from equimol.nn.species_linear import apply_self_connection, self_connection_map


class InteractionBlock(ConvolutionLayer):
    """Convolution through the TP interface, linear self-interaction, gate and residual.

    Args:
        channels: ``C``.
        lmax: highest degree of the node features.
        sh_lmax: highest degree of the edge spherical harmonics.
        num_radial_basis: size of the radial basis.
        radial_mlp_hidden: hidden widths of the radial MLP.
        avg_num_neighbors: ``\\bar N``.
        tp_backend: name of a registered tensor-product backend.
        tp_options: extra keyword options for that backend (e.g. ``cp_rank``).
        self_connection: ``"linear"`` (``W_self`` shared by all elements) or ``"species"`` (one per element).
        num_elements: number of elements (for ``self_connection="species"``).
    """

    def __init__(
        self,
        channels: int,
        lmax: int,
        sh_lmax: int,
        num_radial_basis: int,
        radial_mlp_hidden: list[int],
        avg_num_neighbors: float,
        tp_backend: str = "cg",
        tp_options: dict | None = None,
        self_connection: str = "linear",
        num_elements: int = 1,
    ) -> None:
        super().__init__()
        self.irreps = natural_irreps(channels, lmax)
        self.build_convolution(
            self.irreps,
            sh_lmax,
            self.irreps,
            (num_radial_basis, radial_mlp_hidden),
            avg_num_neighbors,
            tp_backend,
            tp_options,
        )
        self.gate = Gate(channels, lmax)
        self.linear_down = EquivariantLinear(self.irreps, self.gate.irreps_in)
        self.self_interaction = self_connection_map(self_connection, self.irreps, self.gate.irreps_in, num_elements)

    def update(
        self, node_features: torch.Tensor, messages: torch.Tensor, element_index: torch.Tensor | None
    ) -> torch.Tensor:
        """``h' = h + Gate(W_down m + W_self h)``: ``node_features`` and ``messages`` ``[n, irreps.dim]``,
        ``element_index`` ``[n]`` (needed by the species self-connection); returns ``[n, irreps.dim]``."""
        update = self.linear_down(messages) + apply_self_connection(self.self_interaction, node_features, element_index)
        return node_features + self.gate(update)
