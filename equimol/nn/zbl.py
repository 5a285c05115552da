r"""Ziegler-Biersack-Littmark (ZBL) screened nuclear repulsion, switched off smoothly inside the cutoff.

For a pair of atoms with atomic numbers :math:`Z_i, Z_j` at distance :math:`r` (Å):

.. math::

    V(r) = \frac{k_e Z_i Z_j}{r}\, \phi\!\left(\frac{r}{a_{ij}}\right), \qquad
    a_{ij} = \frac{0.46850\ \text{Å}}{Z_i^{0.23} + Z_j^{0.23}}, \qquad k_e = 14.3996454784\ \text{eV Å}

    \phi(x) = 0.18175\, e^{-3.19980 x} + 0.50986\, e^{-0.94229 x}
            + 0.28022\, e^{-0.40290 x} + 0.02817\, e^{-0.20162 x}

(Ziegler, Biersack, Littmark, *The Stopping and Range of Ions in Solids*, 1985: the universal
screening function; :math:`k_e = e^2 / 4\pi\varepsilon_0`). The pair energy is

.. math::

    E_{ij}(r) = V(r)\, s(r), \qquad
    s(r) = \begin{cases} 1 & r \le r^{\mathrm{in}}_{ij} \\
           1 - 10 t^3 + 15 t^4 - 6 t^5 & r^{\mathrm{in}}_{ij} < r < r^{\mathrm{out}}_{ij}, \quad
           t = \frac{r - r^{\mathrm{in}}_{ij}}{r^{\mathrm{out}}_{ij} - r^{\mathrm{in}}_{ij}} \\
           0 & r \ge r^{\mathrm{out}}_{ij} \end{cases}

The quintic switch has :math:`s' = s'' = 0` at both ends, so :math:`E_{ij}` is C^2 (energy, forces
and their derivative continuous) and exactly zero from :math:`r^{\mathrm{out}}_{ij}` on. Since
:math:`V > 0`, :math:`V' < 0` and :math:`s' \le 0`, :math:`E_{ij}` never decreases as the atoms
approach.

**Switch radii** (Å). Fixed ``inner``/``outer`` radii for every pair, or, where not given, fractions
of the sum of the covalent radii :math:`R_i + R_j` of ASE (Cordero et al. 2008):
:math:`r^{\mathrm{out}}_{ij} = f_{\mathrm{out}} (R_i + R_j)` and
:math:`r^{\mathrm{in}}_{ij} = f_{\mathrm{in}} (R_i + R_j)`, by default :data:`OUTER_FRACTION` = 0.55
and :data:`INNER_FRACTION` = 0.3, so that bonds are left to the learned potential
(``benchmarks/zbl_bond_ratios.md``): every pair of 3BPA (train_300K, train_mixedT, test_300K,
test_600K) lies beyond 0.81 of its covalent sum, and every pair of the relaxed frames of the shipped
OC20 trajectories beyond 0.58 (a Cr-Cr pair at 1.62 Å; all others beyond 0.79). Only the unrelaxed
starting frames of OC20 come closer (down to 0.49): the close contacts ZBL is for. Both radii are
capped at the model's radial cutoff, so every switched pair is an edge of the radius graph.

**Summation.** The radius graph holds every pair twice (``i -> j`` and ``j -> i``, periodic images
included); each directed edge gives half the pair energy to its receiver, so each pair counts once and
per-atom energies add up to the total.
"""

from __future__ import annotations

import torch
from ase.data import covalent_radii
from torch import nn

COULOMB_CONSTANT = 14.3996454784  # eV Å: e^2 / (4 pi eps0)
SCREENING_LENGTH = 0.46850  # Å
SCREENING_EXPONENT = 0.23
PHI_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
PHI_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)
INNER_FRACTION = 0.3  # default r_in / (R_i + R_j)
OUTER_FRACTION = 0.55  # default r_out / (R_i + R_j): below the shortest bonds of 3BPA and OC20 (module docstring)


def zbl_screening(x: torch.Tensor) -> torch.Tensor:
    r"""The universal screening function :math:`\phi(x)` of the reduced distance ``x = r / a`` (any shape)."""
    return sum(c * torch.exp(-e * x) for c, e in zip(PHI_COEFFICIENTS, PHI_EXPONENTS))


def smooth_switch(lengths: torch.Tensor, inner: torch.Tensor, outer: torch.Tensor) -> torch.Tensor:
    """Quintic switch ``s``: 1 up to ``inner``, 0 from ``outer`` on, C^2 everywhere (all ``[E]``, Å)."""
    t = ((lengths - inner) / (outer - inner)).clamp(0.0, 1.0)
    return 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t * t)


class ZBLRepulsion(nn.Module):
    """Switched ZBL pair energies of the radius-graph edges, as per-atom energies.

    Args:
        species: the model's atomic numbers (element ``k`` is ``species[k]``).
        radial_cutoff: the model's cutoff (Å); the switch radii are capped at it.
        inner: inner switch radius (Å) for every pair, or ``None`` for ``inner_fraction`` of the covalent sum.
        outer: outer switch radius (Å) for every pair, or ``None`` for ``outer_fraction`` of the covalent sum.
        inner_fraction, outer_fraction: the default radii as fractions of :math:`R_i + R_j`.

    Raises:
        ValueError: a pair whose capped radii do not satisfy ``0 <= inner < outer``.
    """

    def __init__(
        self,
        species: list[int],
        radial_cutoff: float,
        inner: float | None = None,
        outer: float | None = None,
        inner_fraction: float = INNER_FRACTION,
        outer_fraction: float = OUTER_FRACTION,
    ) -> None:
        super().__init__()
        numbers = torch.tensor(species, dtype=torch.float64)
        radii = torch.tensor(covalent_radii[list(species)], dtype=torch.float64)
        pair_radius = radii[:, None] + radii[None, :]
        outer_table = outer_fraction * pair_radius if outer is None else torch.full_like(pair_radius, float(outer))
        inner_table = inner_fraction * pair_radius if inner is None else torch.full_like(pair_radius, float(inner))
        outer_table = outer_table.clamp(max=float(radial_cutoff))
        inner_table = torch.minimum(inner_table, outer_table)
        if bool((inner_table < 0).any()) or bool((inner_table >= outer_table).any()):
            raise ValueError(
                f"ZBL switch radii must satisfy 0 <= inner < outer <= radial_cutoff={radial_cutoff} Å, "
                f"got inner={inner}, outer={outer} (fractions {inner_fraction}, {outer_fraction} of the covalent sum)"
            )
        powers = numbers**SCREENING_EXPONENT
        # Non-persistent: recomputed from the config, so model files and state dicts do not change.
        self.register_buffer("charge_product", COULOMB_CONSTANT * numbers[:, None] * numbers[None, :], persistent=False)
        self.register_buffer(
            "screening_length", SCREENING_LENGTH / (powers[:, None] + powers[None, :]), persistent=False
        )
        self.register_buffer("inner", inner_table, persistent=False)
        self.register_buffer("outer", outer_table, persistent=False)

    def pair_energy(self, lengths: torch.Tensor, element_i: torch.Tensor, element_j: torch.Tensor) -> torch.Tensor:
        """``E_ij(r)`` in eV for ``[E]`` lengths (Å) and element indices ``[E]`` of the two atoms."""
        pair = (element_i, element_j)
        screened = self.charge_product[pair] / lengths * zbl_screening(lengths / self.screening_length[pair])
        return screened * smooth_switch(lengths, self.inner[pair], self.outer[pair])

    def forward(
        self, lengths: torch.Tensor, element_index: torch.Tensor, sender: torch.Tensor, receiver: torch.Tensor
    ) -> torch.Tensor:
        """Per-atom repulsion ``[n]`` (eV) from edge lengths ``[E]`` (Å), element indices ``[n]`` and edges ``[E]``."""
        energy = self.pair_energy(lengths, element_index[sender], element_index[receiver])
        return lengths.new_zeros(element_index.shape[0]).index_add(0, receiver, 0.5 * energy)

    def extra_repr(self) -> str:
        return f"species={self.charge_product.shape[0]}"
