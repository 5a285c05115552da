r"""A MACE-style layer: tensor-product messages form an atomic basis, a many-body product follows.

With node features ``h_i`` (``C x 0e + C x 1o + ...`` up to ``lmax``), element ``k(i)``, edge spherical
harmonics ``Y(\hat r_e)`` up to ``sh_lmax`` and radial basis ``b(r_e)`` of edge ``e = (j \to i)``:

.. math::

    A_i = W_A\, \frac{1}{\bar N} \sum_{e = (j \to i)} \mathrm{TP}\big(W_{up} h_j,\; Y(\hat r_e),\;
          u(r_e)\,\mathrm{MLP}(b(r_e))\big)
          \qquad (\text{degrees } 0 .. L_A)

    B_i = \Big[\sum_{\nu=1}^{\nu_{max}} P^{(\nu)}_{k(i)}(A_i)\Big]_{l \le \mathrm{lmax}}, \qquad
    h_i' = W_B\, B_i + S_{k(i)}\, h_i

``TP`` is any registered backend (``cg``, ``gaunt``, ``cp``, ...) through the one interface, ``P^(nu)``
the many-body self-product of degree ``nu`` with per-element weights (``many_body: cg`` symmetric
product or ``gaunt`` ν-product, :mod:`equimol.nn.many_body`), ``L_A = message_lmax`` (MACE's
``max_ell``: the atomic basis may carry higher degrees than the node features, which the product
folds back into degrees ``<= lmax``), and ``S`` the self-connection: species-dependent
(:class:`~equimol.nn.species_linear.SpeciesLinear`, MACE's ``skip_tp``) or one linear map for all
elements. The nonlinearity is the polynomial product itself (no gate), as in MACE. Every step is
equivariant; taking the ``l <= lmax`` blocks of an irreps-ordered vector is too.

**First layer.** Its inputs are the element embeddings, scalars only, so ``input_lmax = 0`` builds it
on ``C x 0e`` (as MACE does). A layer on zero-padded ``l > 0`` inputs spends most of its message work on
``l_1 > 0`` paths that multiply zeros; it differs from the scalar-input layer only by the paths'
normalization (the fan-in ``F_{l_3}`` counts those paths too).
"""

from __future__ import annotations

import torch

from equimol.manybody.registry import many_body_product
from equimol.nn.convolution import ConvolutionLayer
from equimol.nn.linear import EquivariantLinear, natural_irreps
from equimol.nn.species_linear import apply_self_connection, self_connection_map


class ProductBasisInteraction(ConvolutionLayer):
    """One MACE-style layer (see the module docstring).

    Args:
        channels: ``C``.
        lmax: highest degree of the node features.
        message_lmax: ``L_A >= lmax``, highest degree of the atomic basis ``A``.
        sh_lmax: highest degree of the edge spherical harmonics.
        num_radial_basis: size of the radial basis.
        radial_mlp_hidden: hidden widths of the radial MLP.
        avg_num_neighbors: ``\\bar N``.
        many_body: ``"cg"`` or ``"gaunt"`` (the product ``P``).
        correlation: ``nu_max``.
        num_elements: number of elements.
        self_connection: ``"species"`` or ``"linear"``.
        tp_backend: name of a registered tensor-product backend.
        tp_options: extra keyword options for that backend.
        input_lmax: highest degree of the input features (``lmax`` if None; 0 for the first layer).

    Shapes: ``node_features`` ``[n, natural_irreps(C, input_lmax).dim]`` in,
    ``[n, natural_irreps(C, lmax).dim]`` out.
    """

    def __init__(
        self,
        channels: int,
        lmax: int,
        message_lmax: int,
        sh_lmax: int,
        num_radial_basis: int,
        radial_mlp_hidden: list[int],
        avg_num_neighbors: float,
        many_body: str,
        correlation: int,
        num_elements: int,
        self_connection: str = "species",
        tp_backend: str = "cg",
        tp_options: dict | None = None,
        input_lmax: int | None = None,
    ) -> None:
        super().__init__()
        if message_lmax < lmax:
            raise ValueError(f"message_lmax ({message_lmax}) must be >= lmax ({lmax})")
        input_lmax = lmax if input_lmax is None else input_lmax
        if not 0 <= input_lmax <= lmax:
            raise ValueError(f"input_lmax ({input_lmax}) must be in 0..lmax ({lmax})")
        self.irreps = natural_irreps(channels, lmax)
        self.input_irreps = natural_irreps(channels, input_lmax)
        self.message_irreps = natural_irreps(channels, message_lmax)
        self.build_convolution(
            self.input_irreps,
            sh_lmax,
            self.message_irreps,
            (num_radial_basis, radial_mlp_hidden),
            avg_num_neighbors,
            tp_backend,
            tp_options,
        )
        self.linear_messages = EquivariantLinear(self.message_irreps, self.message_irreps)
        self.product = many_body_product(many_body, channels, message_lmax, correlation, num_elements)
        self.linear_out = EquivariantLinear(self.irreps, self.irreps)
        self.self_connection = self_connection_map(self_connection, self.input_irreps, self.input_irreps, num_elements)

    def update(self, node_features: torch.Tensor, messages: torch.Tensor, element_index: torch.Tensor) -> torch.Tensor:
        """``h' = W_B B + S_k h``: ``node_features`` ``[n, input_irreps.dim]``, ``messages`` ``[n,
        message_irreps.dim]``, ``element_index`` ``[n]`` int64; returns ``[n, irreps.dim]``."""
        basis = self.linear_messages(messages)
        product = self.product(basis, element_index)[:, : self.irreps.dim]
        skip = apply_self_connection(self.self_connection, node_features, element_index)
        if skip.shape[1] < self.irreps.dim:  # scalar inputs: the self-connection has no l > 0 blocks
            skip = torch.cat([skip, skip.new_zeros(skip.shape[0], self.irreps.dim - skip.shape[1])], dim=1)
        return self.linear_out(product) + skip
