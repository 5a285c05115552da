r"""Species-dependent equivariant linear map: the self-connection of MACE-style layers.

For node ``i`` of element ``k(i)`` and every irrep ``l`` present in both ``irreps_in`` and ``irreps_out``:

.. math:: y^{(l)}_{i v m} = \frac{1}{\sqrt{C^{(l)}_{in}}} \sum_u W^{(l)}_{k(i)\, u v}\, x^{(l)}_{i u m}

This is e3nn's ``FullyConnectedTensorProduct(irreps_in, "K x 0e", irreps_out)`` with a one-hot element
vector as the second operand (MACE's ``skip_tp``), computed without the one-hot product: every element's
map is applied and the node's own one is gathered. Like :class:`~equimol.nn.linear.EquivariantLinear` it
mixes channels inside each irrep only, so it commutes with every Wigner ``D^{(l)}`` (rotations and
inversion act on ``m`` alone). Unit-variance weights keep unit-variance inputs at unit variance.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn

from equimol.nn.linear import EquivariantLinear, irrep_pairs, irreps_blocks, join_blocks


class SpeciesLinear(nn.Module):
    """Channel mixing inside each irrep with one weight matrix per element, ``irreps_in -> irreps_out``.

    Args:
        irreps_in: input irreps (each irrep at most once), e.g. ``"16x0e + 16x1o"``.
        irreps_out: output irreps; each must occur in ``irreps_in`` (multiplicities may differ).
        num_elements: ``K``, the number of elements the model knows.

    Shapes: ``x`` ``[n, irreps_in.dim]``, ``element_index`` ``[n]`` int64 in ``0..K-1`` ->
    ``[n, irreps_out.dim]``.
    """

    def __init__(self, irreps_in: o3.Irreps | str, irreps_out: o3.Irreps | str, num_elements: int) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.num_elements = int(num_elements)
        self._pairs = irrep_pairs(self.irreps_in, self.irreps_out)
        self.weights = nn.ParameterList(
            nn.Parameter(
                torch.randn(self.num_elements, self.irreps_in[i].mul, self.irreps_out[o].mul, dtype=torch.float64)
            )
            for i, o in self._pairs
        )

    def forward(self, x: torch.Tensor, element_index: torch.Tensor) -> torch.Tensor:
        """``x`` ``[n, irreps_in.dim]``, ``element_index`` ``[n]`` -> ``[n, irreps_out.dim]``."""
        blocks_in = irreps_blocks(x, self.irreps_in)
        blocks_out = []
        for (index_in, _), weight in zip(self._pairs, self.weights):
            # [n, K, v, m] for every element, then the node's own element: K is small (a handful of
            # elements), so this beats gathering an [n, u, v] weight tensor per node.
            every_element = torch.einsum("num,kuv->nkvm", blocks_in[index_in], weight)
            picked = every_element[torch.arange(x.shape[0], device=x.device), element_index]
            blocks_out.append(picked / math.sqrt(weight.shape[1]))
        return join_blocks(blocks_out)

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out}, num_elements={self.num_elements}"


SELF_CONNECTIONS = ("linear", "species")


def self_connection_map(kind: str, irreps_in: o3.Irreps, irreps_out: o3.Irreps, num_elements: int) -> nn.Module:
    """``"species"``: :class:`SpeciesLinear`; ``"linear"``: :class:`EquivariantLinear` with a scalar bias."""
    if kind == "species":
        return SpeciesLinear(irreps_in, irreps_out, num_elements)
    if kind == "linear":
        return EquivariantLinear(irreps_in, irreps_out, bias=True)
    raise ValueError(f"self_connection must be one of {SELF_CONNECTIONS}, got {kind!r}")


def apply_self_connection(module: nn.Module, x: torch.Tensor, element_index: torch.Tensor) -> torch.Tensor:
    """Call a map made by :func:`self_connection_map` (only the species map reads the elements)."""
    return module(x, element_index) if isinstance(module, SpeciesLinear) else module(x)
