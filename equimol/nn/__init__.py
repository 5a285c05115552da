"""Building blocks of the potential, one concept per module.

* :mod:`~equimol.nn.radial` -- Bessel basis, C^2 polynomial envelope, radial MLP.
* :mod:`~equimol.nn.embedding` -- species list, atomic number -> element index, species embedding.
* :mod:`~equimol.nn.linear` -- natural-parity irreps ``C x 0e + C x 1o + C x 2e ...`` and channel-mixing linears.
* :mod:`~equimol.nn.gate` -- gate nonlinearity.
* :mod:`~equimol.nn.convolution` -- the convolution (TP messages summed over neighbours) every layer starts with.
* :mod:`~equimol.nn.interaction` -- one message-passing block through the TP interface.
* :mod:`~equimol.nn.many_body` -- the residual many-body block around a self-product of :mod:`equimol.manybody`.
* :mod:`~equimol.nn.readout` -- per-atom energies with per-species scale, shift and E0s.
* :mod:`~equimol.nn.spe` -- stable positional encodings (``exact`` / ``chebyshev``), safe for forces;
  :mod:`~equimol.nn.spe_filters` and :mod:`~equimol.nn.spe_exact` hold the filters and the
  degenerate-safe matrix-function derivative.
"""

from equimol.nn.embedding import SpeciesEmbedding, SpeciesIndex, parse_species
from equimol.nn.gate import Gate
from equimol.nn.interaction import InteractionBlock
from equimol.nn.linear import EquivariantLinear, natural_irreps
from equimol.nn.many_body import ManyBodyBlock
from equimol.nn.radial import BesselBasis, PolynomialEnvelope, RadialMLP
from equimol.nn.readout import EnergyReadout
from equimol.nn.spe import StablePositionalEncoding

__all__ = [
    "BesselBasis",
    "EnergyReadout",
    "EquivariantLinear",
    "Gate",
    "InteractionBlock",
    "ManyBodyBlock",
    "PolynomialEnvelope",
    "RadialMLP",
    "SpeciesEmbedding",
    "SpeciesIndex",
    "StablePositionalEncoding",
    "natural_irreps",
    "parse_species",
]
