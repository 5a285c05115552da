r"""Equivariant linear maps and the natural-parity feature irreps used throughout the model.

Node features are ``C x 0e + C x 1o + C x 2e + ...`` up to ``lmax`` (parity ``(-1)^l``), which all
three tensor-product backends (``cg``, ``gaunt``, ``cp``) serve. They are stored in e3nn's "mul_ir"
layout: block ``l`` is ``[C, 2l + 1]`` flattened channel-major.

:class:`EquivariantLinear` mixes channels inside each irrep and never mixes irreps or components:

.. math:: y^{(l)}_{v m} = \frac{1}{\sqrt{C^{(l)}_{in}}} \sum_u W^{(l)}_{u v}\, x^{(l)}_{u m}

which commutes with every Wigner ``D^{(l)}`` (rotation and inversion act on ``m`` only).
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn


def natural_irreps(channels: int, lmax: int) -> o3.Irreps:
    """``channels x 0e + channels x 1o + ... + channels x lmax((-1)^lmax)``."""
    if channels < 1 or lmax < 0:
        raise ValueError(f"need channels >= 1 and lmax >= 0, got channels={channels}, lmax={lmax}")
    return o3.Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])


def irreps_blocks(x: torch.Tensor, irreps: o3.Irreps) -> list[torch.Tensor]:
    """Split ``x`` ``[n, irreps.dim]`` into views ``[n, mul, 2l + 1]``, one per irrep."""
    return [x[:, sl].reshape(x.shape[0], mul, ir.dim) for (mul, ir), sl in zip(irreps, irreps.slices())]


def join_blocks(blocks: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`irreps_blocks`: ``[n, mul, 2l + 1]`` blocks into ``[n, dim]``."""
    return torch.cat([block.reshape(block.shape[0], -1) for block in blocks], dim=-1)


def irrep_pairs(irreps_in: o3.Irreps, irreps_out: o3.Irreps) -> list[tuple[int, int]]:
    """``(index_in, index_out)`` for every irrep of ``irreps_out``: the block of ``irreps_in`` it mixes from.

    Raises:
        ValueError: ``irreps_in`` repeats an irrep, or an output irrep is absent from it.
    """
    input_index = {}
    for index, (_, ir) in enumerate(irreps_in):
        if ir in input_index:
            raise ValueError(f"irreps_in={irreps_in} repeats {ir}; simplify it first")
        input_index[ir] = index
    for _, ir in irreps_out:
        if ir not in input_index:
            raise ValueError(f"irreps_out={irreps_out} contains {ir}, absent from irreps_in={irreps_in}")
    return [(input_index[ir], index_out) for index_out, (_, ir) in enumerate(irreps_out)]


class EquivariantLinear(nn.Module):
    """Channel mixing inside each irrep, ``irreps_in -> irreps_out``.

    Every irrep of ``irreps_out`` must occur in ``irreps_in`` (each irrep at most once in both; the
    multiplicities may differ). Weights are unit-variance, scaled by ``1 / sqrt(mul_in)``, so unit-variance
    inputs give unit-variance outputs. ``bias=True`` adds a learnable bias to the ``0e`` block only
    (a bias on ``l > 0`` would break equivariance).

    Args:
        irreps_in: input irreps, e.g. ``"8x0e + 8x1o"``.
        irreps_out: output irreps, e.g. ``"24x0e + 8x1o"``.
        bias: bias on the scalar output block.
    """

    def __init__(self, irreps_in: o3.Irreps | str, irreps_out: o3.Irreps | str, bias: bool = False) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self._pairs = irrep_pairs(self.irreps_in, self.irreps_out)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(self.irreps_in[i].mul, self.irreps_out[o].mul, dtype=torch.float64))
            for i, o in self._pairs
        )
        scalar_out = [i for i, (_, ir) in enumerate(self.irreps_out) if ir == o3.Irrep("0e")]
        if bias and scalar_out:
            self.bias = nn.Parameter(torch.zeros(self.irreps_out[scalar_out[0]].mul, dtype=torch.float64))
            self._bias_block = scalar_out[0]
        else:
            self.register_parameter("bias", None)
            self._bias_block = -1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[n, irreps_in.dim]`` -> ``[n, irreps_out.dim]``."""
        if x.shape[-1] != self.irreps_in.dim:
            raise ValueError(f"input has {x.shape[-1]} features; expected {self.irreps_in.dim} for {self.irreps_in}")
        blocks_in = irreps_blocks(x, self.irreps_in)
        blocks_out = []
        for (index_in, index_out), weight in zip(self._pairs, self.weights):
            block = torch.einsum("num,uv->nvm", blocks_in[index_in], weight) / math.sqrt(weight.shape[0])
            if index_out == self._bias_block:
                block = block + self.bias.view(1, -1, 1)
            blocks_out.append(block)
        return join_blocks(blocks_out)

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out}, bias={self.bias is not None}"
