r"""``many_body: cg``: the MACE-style self-product by recursive channel-wise Clebsch-Gordan coupling.

With ``A_i`` the node features (``C x 0e + C x 1o + ...`` up to ``lmax``) and ``k(i)`` its element:

.. math::

    B^{(1)}_i = w^{(1)}_{k(i)} \odot A_i, \qquad
    B^{(\nu)}_i = \mathrm{CG}_{uuu}\big(B^{(\nu-1)}_i, A_i;\; w^{(\nu)}_{k(i)}\big), \qquad
    P(A)_i = \sum_{\nu=1}^{\nu_{max}} B^{(\nu)}_i

``CG_uuu`` is the channel-wise ("uuu") Clebsch-Gordan product of e3nn over every parity- and
triangle-allowed path into the natural-parity irreps, with one weight per (element, path, channel):
``B^(nu)`` is a polynomial of degree ``nu`` in ``A`` (body order ``nu + 1`` after one interaction), the
symmetric tensor powers of MACE reached by recursive coupling. Each factor is equivariant, so the
product is.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn

from equimol.manybody.registry import register_many_body
from equimol.nn.linear import irreps_blocks, join_blocks, natural_irreps
from equimol.tp.paths import allowed_paths
from equimol.utils.dtype import float64_construction


class SymmetricProduct(nn.Module):
    """``sum_nu B^(nu)`` with per-element weights, ``[n, irreps.dim] -> [n, irreps.dim]``.

    Args:
        channels: ``C``.
        lmax: highest degree.
        correlation: ``nu_max >= 1``.
        num_elements: number of elements (rows of the weight tables).
    """

    def __init__(self, channels: int, lmax: int, correlation: int, num_elements: int) -> None:
        super().__init__()
        if correlation < 1:
            raise ValueError(f"correlation must be >= 1, got {correlation}")
        self.irreps = natural_irreps(channels, lmax)
        self.first_weight = nn.Parameter(torch.randn(num_elements, lmax + 1, channels, dtype=torch.float64))
        self.products = nn.ModuleList()
        self.weights = nn.ParameterList()
        paths = allowed_paths(self.irreps, self.irreps, self.irreps)
        instructions = [(p.i1, p.i2, p.i_out, "uuu", True) for p in paths]
        for _ in range(2, correlation + 1):
            with float64_construction():  # e3nn builds its 3j constants in the default dtype
                product = o3.TensorProduct(
                    self.irreps,
                    self.irreps,
                    self.irreps,
                    instructions,
                    irrep_normalization="component",
                    path_normalization="element",
                    internal_weights=False,
                    shared_weights=False,
                )
            self.products.append(product)
            # 1 / sqrt(nu) keeps the sum of correlation orders of order one at initialisation.
            scale = 1.0 / math.sqrt(len(self.weights) + 2)
            self.weights.append(
                nn.Parameter(scale * torch.randn(num_elements, product.weight_numel, dtype=torch.float64))
            )

    def forward(self, x: torch.Tensor, element_index: torch.Tensor) -> torch.Tensor:
        """``x`` ``[n, irreps.dim]``, ``element_index`` ``[n]`` -> ``[n, irreps.dim]``."""
        weight = self.first_weight[element_index]  # [n, L + 1, C]
        power = join_blocks(
            [block * weight[:, l].unsqueeze(-1) for l, block in enumerate(irreps_blocks(x, self.irreps))]
        )
        total = power
        for product, table in zip(self.products, self.weights):
            power = product(power, x, table[element_index])
            total = total + power
        return total


@register_many_body("cg")
def build(channels: int, lmax: int, correlation: int, num_elements: int) -> SymmetricProduct:
    """:class:`SymmetricProduct` (the registry's builder)."""
    return SymmetricProduct(channels, lmax, correlation, num_elements)
