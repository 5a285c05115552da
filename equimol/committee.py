r"""Committees of potentials: the mean prediction and the spread across members, as an uncertainty.

For ``M`` members with predictions :math:`y^{(m)}` (energy, each force component, each stress
component) the committee predicts the mean and reports the population standard deviation

.. math:: \bar y = \frac{1}{M} \sum_m y^{(m)}, \qquad
          \sigma_y = \Big(\frac{1}{M} \sum_m \big(y^{(m)} - \bar y\big)^2\Big)^{1/2}

(``ddof = 0``, as MACE's committee calculator), computed from the pairwise differences,
:math:`\sigma_y^2 = \frac{1}{2M^2} \sum_{m,n} (y^{(m)} - y^{(n)})^2` (the same number), so that identical
members give exactly zero spread (a mean of equal floats need not round to that float).
Members are trained from different seeds (``trainer.committee_seeds``, :mod:`equimol.train.run`);
their spread is expected to grow away from the training data, which is what active learning selects on
(``benchmarks/committee_3bpa.md`` measures it on 3BPA).

Result keys of :class:`~equimol.calculator.EquimolCalculator` with several models (ASE units):

* ``energy``, ``free_energy`` (eV), ``energies`` (eV, ``[n]``), ``forces`` (eV/Å, ``[n, 3]``),
  ``stress`` (eV/Å³, Voigt ``[6]``): the committee means;
* ``energy_std`` (eV): spread of the total energy; ``energies_std`` (eV, ``[n]``): of the per-atom
  energies; ``forces_std`` (eV/Å, ``[n, 3]``): of each force component; ``stress_std`` (eV/Å³, ``[6]``):
  of each stress component, when stress was computed;
* ``energy_members`` (eV, ``[M]``) and ``forces_members`` (eV/Å, ``[M, n, 3]``): each member's values.
"""

from __future__ import annotations

import numpy as np

COMMITTEE_PROPERTIES = [
    "energy_std",
    "energies_std",
    "forces_std",
    "stress_std",
    "energy_members",
    "forces_members",
]


def spread(values: np.ndarray) -> np.ndarray:
    """Population standard deviation over axis 0 of ``[M, ...]`` values, exactly 0 for identical members."""
    differences = values[:, None] - values[None, :]
    return np.sqrt((differences**2).sum(axis=(0, 1)) / (2.0 * values.shape[0] ** 2))


def committee_results(members: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray | float]:
    """Mean and spread of the members' results (see the module docstring).

    Args:
        members: one mapping per member with ``energy`` (float, eV), ``energies`` ``[n]``, ``forces``
            ``[n, 3]`` and optionally ``stress`` ``[6]`` (all float64 numpy).

    Returns:
        ``energy``, ``free_energy``, ``energies``, ``forces`` (means), the ``*_std`` spreads,
        ``energy_members`` ``[M]`` and ``forces_members`` ``[M, n, 3]``; ``stress`` and ``stress_std``
        when every member has a stress.
    """
    if not members:
        raise ValueError("a committee needs at least one member")
    energy = np.array([member["energy"] for member in members], dtype=np.float64)
    forces = np.stack([member["forces"] for member in members])
    energies = np.stack([member["energies"] for member in members])
    results: dict[str, np.ndarray | float] = {
        "energy": float(energy.mean()),
        "free_energy": float(energy.mean()),
        "energies": energies.mean(axis=0),
        "forces": forces.mean(axis=0),
        "energy_std": float(spread(energy)),
        "energies_std": spread(energies),
        "forces_std": spread(forces),
        "energy_members": energy,
        "forces_members": forces,
    }
    if all("stress" in member for member in members):
        stress = np.stack([member["stress"] for member in members])
        results["stress"] = stress.mean(axis=0)
        results["stress_std"] = spread(stress)
    return results
