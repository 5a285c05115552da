r"""Gate nonlinearity for natural-parity features (Weiler et al. 2018; e3nn ``nn.Gate``).

Input irreps ``C x 0e (scalars) + G x 0e (gates) + C x 1o + C x 2e + ...`` with ``G = C * lmax``
(one gate per channel of every ``l > 0`` irrep), output ``C x 0e + C x 1o + C x 2e + ...``:

.. math:: s' = \mathrm{SiLU}(s), \qquad x'^{(l)}_{u m} = \sigma(g^{(l)}_u)\, x^{(l)}_{u m}

Gates are invariant scalars, so scaling an irrep by them commutes with rotations and inversion.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from equimol.nn.linear import irreps_blocks, join_blocks, natural_irreps


class Gate(nn.Module):
    """SiLU on scalars, sigmoid gates on ``l > 0`` irreps.

    Args:
        channels: ``C``.
        lmax: highest degree of the gated features.

    Attributes:
        irreps_in: ``(C + C lmax) x 0e + C x 1o + ...``, what the preceding linear layer must produce.
        irreps_out: ``C x 0e + C x 1o + ...``.
    """

    def __init__(self, channels: int, lmax: int) -> None:
        super().__init__()
        self.channels = channels
        self.lmax = lmax
        self.irreps_out = natural_irreps(channels, lmax)
        self.irreps_in = o3.Irreps([(channels * (1 + lmax), (0, 1))]) + self.irreps_out[1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, irreps_in.dim]`` -> ``[n, irreps_out.dim]``."""
        blocks = irreps_blocks(x, self.irreps_in)
        scalars_and_gates = blocks[0]
        scalars = torch.nn.functional.silu(scalars_and_gates[:, : self.channels])
        gates = torch.sigmoid(scalars_and_gates[:, self.channels :, 0]).view(x.shape[0], self.lmax, self.channels)
        gated = [block * gates[:, index].unsqueeze(-1) for index, block in enumerate(blocks[1:])]
        return join_blocks([scalars, *gated])
