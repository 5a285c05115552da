r"""Species handling: atomic numbers to element indices, and the learned species embedding.

A model knows a fixed list of atomic numbers ``species`` (``Z_0, Z_1, ...``); element index ``k`` is the
position of ``Z`` in that list. The embedding gives ``C`` invariant scalars per atom,

.. math:: h^{(0)}_{i} = E_{k(i)} \in \mathbb{R}^C,

initialised with unit variance.
"""

from __future__ import annotations

import torch
from ase.data import chemical_symbols
from torch import nn

from equimol.errors import EquimolInputError
from equimol.utils.tracing import tracing

_MAX_Z = len(chemical_symbols) - 1  # 118: ASE's element table, index 0 is the dummy 'X'


def parse_species(species: list) -> list[int]:
    """Atomic numbers from a list of numbers or chemical symbols (``[1, 6, "O"]`` -> ``[1, 6, 8]``)."""
    if not isinstance(species, (list, tuple)) or len(species) == 0:
        raise ValueError(f"species must be a non-empty list of atomic numbers or symbols, got {species!r}")
    numbers = []
    for entry in species:
        if isinstance(entry, str):
            if entry not in chemical_symbols[1:]:
                raise ValueError(f"species entry {entry!r} is not a chemical symbol")
            numbers.append(chemical_symbols.index(entry))
        elif isinstance(entry, int) and not isinstance(entry, bool) and 1 <= entry <= _MAX_Z:
            numbers.append(int(entry))
        else:
            raise ValueError(f"species entry {entry!r} is neither an atomic number in 1..{_MAX_Z} nor a symbol")
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"species {species!r} lists an element twice")
    return numbers


class SpeciesIndex(nn.Module):
    """Map atomic numbers ``[n]`` to element indices ``[n]``; unknown elements raise a clear error."""

    def __init__(self, species: list[int]) -> None:
        super().__init__()
        self.species = list(species)
        table = torch.full((_MAX_Z + 1,), -1, dtype=torch.long)
        table[torch.tensor(self.species)] = torch.arange(len(self.species))
        self.register_buffer("table", table, persistent=False)

    def forward(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """``[n]`` int64 atomic numbers -> ``[n]`` int64 element indices."""
        out_of_range = (atomic_numbers < 0) | (atomic_numbers > _MAX_Z)
        index = self.table[atomic_numbers.clamp(0, _MAX_Z)]
        unknown = out_of_range | (index < 0)
        if not tracing() and bool(unknown.any()):  # a traced graph cannot branch on values
            missing = sorted({int(z) for z in atomic_numbers[unknown].tolist()})
            raise EquimolInputError(f"atomic number(s) {missing} are not among the model's species {self.species}")
        return index


class SpeciesEmbedding(nn.Module):
    """Learned ``[num_species, C]`` table of initial invariant node features.

    Args:
        num_species: number of elements the model knows.
        channels: ``C``.
    """

    def __init__(self, num_species: int, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_species, channels, dtype=torch.float64))

    def forward(self, element_index: torch.Tensor) -> torch.Tensor:
        """``[n]`` element indices -> ``[n, C]``."""
        return self.weight[element_index]
