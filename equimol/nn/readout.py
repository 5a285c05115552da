r"""Per-atom energy readout with per-species scale, shift and reference energies (E0s).

.. math:: \varepsilon_i = \sigma_{k(i)}\, \mathrm{MLP}(s_i) + \mu_{k(i)} + E^0_{k(i)}, \qquad
          E = \sum_i \varepsilon_i

with ``s_i`` the ``C`` invariant scalars (``0e`` block) of the final node features, ``sigma`` and
``mu`` per-species scale and shift (eV), and ``E0`` the energy of the isolated atom of each element (eV),
fixed (buffers, not trained) so that a model starts from the reference-energy baseline.
"""

from __future__ import annotations

import torch
from torch import nn


class EnergyReadout(nn.Module):
    """Invariant scalars ``[n, C]`` -> per-atom energies ``[n]`` in eV.

    Args:
        channels: ``C``.
        hidden: hidden width of the readout MLP.
        energy_scale: ``[num_species]`` sigma (eV).
        energy_shift: ``[num_species]`` mu (eV).
        e0s: ``[num_species]`` reference energies (eV).
    """

    def __init__(
        self,
        channels: int,
        hidden: int,
        energy_scale: torch.Tensor,
        energy_shift: torch.Tensor,
        e0s: torch.Tensor,
    ) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden, dtype=torch.float64), nn.SiLU(), nn.Linear(hidden, 1, dtype=torch.float64)
        )
        self.register_buffer("energy_scale", energy_scale.to(torch.float64))
        self.register_buffer("energy_shift", energy_shift.to(torch.float64))
        self.register_buffer("e0s", e0s.to(torch.float64))

    def forward(self, scalars: torch.Tensor, element_index: torch.Tensor) -> torch.Tensor:
        """``scalars`` ``[n, C]``, ``element_index`` ``[n]`` -> ``[n]`` eV."""
        raw = self.mlp(scalars).squeeze(-1)
        return self.energy_scale[element_index] * raw + self.energy_shift[element_index] + self.e0s[element_index]
