r"""Many-body (higher body-order) node update, MACE-style: ``h' = h + W P(h)``, with ``P`` the self-product
of a node's features (:mod:`equimol.manybody`: ``cg`` recursive Clebsch-Gordan coupling as in MACE,
``gaunt`` the Gaunt powers of Luo et al. 2024, ``cueq`` cuEquivariance's symmetric contraction).
"""

from __future__ import annotations

import torch
from torch import nn

from equimol.manybody.registry import many_body_product
from equimol.nn.linear import EquivariantLinear, natural_irreps


class ManyBodyBlock(nn.Module):
    """Residual many-body update ``h + W P(h)`` with ``P`` the self-product of kind ``kind``.

    Args:
        kind: a kind of :func:`equimol.manybody.kinds` (``"cg"``, ``"gaunt"``, ``"cueq"``).
        channels, lmax, correlation, num_elements: ``C``, highest degree, ``nu_max``, rows of the weight tables.
    """

    def __init__(self, kind: str, channels: int, lmax: int, correlation: int, num_elements: int) -> None:
        super().__init__()
        self.product = many_body_product(kind, channels, lmax, correlation, num_elements)
        self.kind = kind
        self.linear = EquivariantLinear(natural_irreps(channels, lmax), natural_irreps(channels, lmax))

    def forward(self, x: torch.Tensor, element_index: torch.Tensor) -> torch.Tensor:
        """``[n, irreps.dim]`` -> ``[n, irreps.dim]``."""
        return x + self.linear(self.product(x, element_index))
