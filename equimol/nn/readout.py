r"""Per-atom energy readout with per-species scale, shift and reference energies (E0s).

.. math:: \varepsilon_i = \sigma_{k(i)} \Big( \sum_{t < T} w_t^\top s^{(t)}_i + \mathrm{MLP}(s^{(T)}_i) \Big)
          + \mu_{k(i)} + E^0_{k(i)}, \qquad E = \sum_i \varepsilon_i

with ``s^(t)_i`` the ``C`` invariant scalars (``0e`` block) of the node features after layer ``t``.
With one read-out (``readout: final``) only the last layer's ``s^(T)`` enters, through the MLP; with
``readout: per_layer`` (MACE) every earlier layer adds a linear read-out ``w_t``, so each layer's
scalars reach the energy (and the forces' gradient) directly rather than only through later layers. ``sigma`` and
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
        num_linear_heads: number of earlier layers read out linearly (0 for a final read-out only).
    """

    def __init__(
        self,
        channels: int,
        hidden: int,
        energy_scale: torch.Tensor,
        energy_shift: torch.Tensor,
        e0s: torch.Tensor,
        num_linear_heads: int = 0,
    ) -> None:
        super().__init__()
        self.linear_heads = nn.ModuleList(
            nn.Linear(channels, 1, bias=False, dtype=torch.float64) for _ in range(num_linear_heads)
        )
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden, dtype=torch.float64), nn.SiLU(), nn.Linear(hidden, 1, dtype=torch.float64)
        )
        self.register_buffer("energy_scale", energy_scale.to(torch.float64))
        self.register_buffer("energy_shift", energy_shift.to(torch.float64))
        self.register_buffer("e0s", e0s.to(torch.float64))

    def forward(self, scalars: torch.Tensor | list[torch.Tensor], element_index: torch.Tensor) -> torch.Tensor:
        """``scalars`` ``[n, C]`` (or one ``[n, C]`` per layer, the last one last), ``element_index`` ``[n]``
        -> ``[n]`` eV."""
        layers = [scalars] if isinstance(scalars, torch.Tensor) else list(scalars)
        if len(layers) != len(self.linear_heads) + 1:
            raise ValueError(f"readout expects {len(self.linear_heads) + 1} layers of scalars, got {len(layers)}")
        raw = self.mlp(layers[-1]).squeeze(-1)
        for head, layer_scalars in zip(self.linear_heads, layers[:-1]):
            raw = raw + head(layer_scalars).squeeze(-1)
        return self.energy_scale[element_index] * raw + self.energy_shift[element_index] + self.e0s[element_index]

    def layer_energy(
        self, index: int, num_layers: int, scalars: torch.Tensor, element_index: torch.Tensor
    ) -> torch.Tensor:
        """Layer ``index``'s share (``[n]`` eV) of :meth:`forward` in a model of ``num_layers`` layers, from that
        layer's ``[n, C]`` scalars: the last layer's MLP with the shift and E0, an earlier layer's linear head
        (zero for a layer that is not read out); the shares of all layers sum to :meth:`forward`."""
        scale = self.energy_scale[element_index]
        if index == num_layers - 1:
            return scale * self.mlp(scalars).squeeze(-1) + self.energy_shift[element_index] + self.e0s[element_index]
        head = index - (num_layers - 1 - len(self.linear_heads))
        if head < 0:
            return scalars.new_zeros(scalars.shape[0])
        return scale * self.linear_heads[head](scalars).squeeze(-1)
