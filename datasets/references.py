"""Reference energies: per-element linear references (E0s) and per-system references.

**Per-element references.** A structure with atomic numbers :math:`Z_1 \\dots Z_n` gets

.. math:: E_{\\mathrm{ref}} = \\sum_{i=1}^{n} c_{Z_i},

with ``coeff`` a ``[119]`` float64 array indexed by atomic number — the ``coeff[Z]`` layout of
fairchem's ``oc20_linref.npz`` and ``oc22_linfit_coeffs.npz`` (only the elements present matter).
The coefficients come from such a file, from isolated-atom energies (``iso_atoms.xyz``: each
frame is one atom, so :math:`c_Z = E(\\text{atom } Z)`), from a dict, or from a least-squares fit
:math:`\\min_c \\lVert A c - E \\rVert_2` where :math:`A_{sZ}` counts atoms of element :math:`Z` in
structure :math:`s` (minimum-norm solution when compositions are collinear, e.g. a single molecule).
Elements without a coefficient are NaN and raise an error naming the element when met.

**Per-system references** (OC20 adsorption energies): :math:`E_{\\mathrm{ads}} = E - E_{\\mathrm{ref}}(\\mathrm{sid})`,
with the reference stored on the frame (``reference_energy``, from the raw S2EF ``.txt`` files) or
looked up by system id in a mapping (a dict, or a ``.pkl``/``.json`` file ``{sid: energy}``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ase.data import atomic_numbers as ATOMIC_NUMBERS
from ase.data import chemical_symbols

from equimol.errors import EquimolInputError
from equimol.safe_pickle import restricted_loads

from .readers import DataFormatError, LabelKeys, read_ase_records

NUM_ELEMENTS = len(chemical_symbols)  # 119, ASE's element table: index 0 unused, 1..118 the elements


def reference_table(references: Mapping[int, float] | None) -> torch.Tensor:
    """``[NUM_ELEMENTS]`` float64 table of ``{atomic number: eV}`` (zero for elements not given)."""
    table = torch.zeros(NUM_ELEMENTS, dtype=torch.float64)
    for number, energy in (references or {}).items():
        table[int(number)] = float(energy)
    return table


def add_references(energy: torch.Tensor, atomic_numbers: torch.Tensor, batch: torch.Tensor | None, table: torch.Tensor):
    """Total energies ``[B]`` (eV): labels ``energy`` ``[B]`` from which the data module took the per-element
    references, plus ``sum_i table[Z_i]`` over each structure's atoms (``batch`` ``[n]``; None: one structure).

    The inverse of the subtraction of :func:`~equimol.datasets.atoms_dataset.reference_energy`, for the
    trainer and the evaluation alike; sums in float64, returned in the dtype of ``energy``.
    """
    if batch is None:
        batch = torch.zeros_like(atomic_numbers)
    per_atom = table.to(energy.device)[atomic_numbers]
    per_graph = per_atom.new_zeros(energy.shape[0]).index_add(0, batch, per_atom)
    return energy.view(-1) + per_graph.to(energy.dtype)


class ElementReferences:
    """Per-element linear reference energies ``coeff[Z]`` (eV), NaN where unknown."""

    def __init__(self, coeff: Sequence[float] | np.ndarray, source: str = "coefficients") -> None:
        coeff = np.asarray(coeff, dtype=np.float64).reshape(-1)
        if coeff.size > NUM_ELEMENTS:
            raise EquimolInputError(
                f"{source}: {coeff.size} coefficients, at most {NUM_ELEMENTS} (index = atomic number)"
            )
        self.coeff = np.full(NUM_ELEMENTS, np.nan)
        self.coeff[: coeff.size] = coeff
        self.source = source

    @classmethod
    def from_npz(cls, path: str | Path) -> ElementReferences:
        """Read fairchem's layout: an ``.npz`` with a ``coeff`` array indexed by atomic number."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"reference file {str(path)!r} does not exist")
        with np.load(path) as archive:
            if "coeff" not in archive:
                raise DataFormatError(f"{path}: no 'coeff' array; arrays present: {sorted(archive.files)}")
            return cls(archive["coeff"], source=str(path))

    @classmethod
    def from_isolated_atoms(cls, path: str | Path, energy_key: str = "energy") -> ElementReferences:
        """E0s from a file of single-atom frames (e.g. 3BPA's ``iso_atoms.xyz``)."""
        keys = LabelKeys(energy_key=energy_key, forces_key=None, stress_key=None)
        records = read_ase_records(path, keys)
        return cls.from_records([(f"{path}, frame {frame}", record) for frame, record in enumerate(records)], str(path))

    @classmethod
    def from_records(cls, records: Sequence[tuple[str, object]], source: str) -> ElementReferences:
        """E0s from ``(where, frame record)`` pairs of single atoms with an ``energy`` (eV).

        Raises:
            DataFormatError: a frame with more than one atom, or two different energies for one element.
        """
        coeff = np.full(NUM_ELEMENTS, np.nan)
        for where, record in records:
            if record.natoms != 1:
                raise DataFormatError(f"{where}: an isolated-atom frame with {record.natoms} atoms")
            z = int(record.atomic_numbers[0])
            if not np.isnan(coeff[z]) and coeff[z] != record.energy:
                raise DataFormatError(f"{where}: second, different isolated-atom energy for {chemical_symbols[z]}")
            coeff[z] = record.energy
        return cls(coeff, source=source)

    @classmethod
    def from_dict(cls, energies: Mapping[str | int, float]) -> ElementReferences:
        """From ``{"H": -13.6, 6: -1029.5, ...}`` (symbols or atomic numbers)."""
        coeff = np.full(NUM_ELEMENTS, np.nan)
        for element, energy in energies.items():
            if isinstance(element, str) and not element.isdigit():
                if element not in ATOMIC_NUMBERS:
                    raise EquimolInputError(f"element_references: unknown element {element!r}")
                z = ATOMIC_NUMBERS[element]
            else:
                z = int(element)
                if not 0 < z < NUM_ELEMENTS:
                    raise EquimolInputError(f"element_references: atomic number {z} out of range 1..118")
            coeff[z] = float(energy)
        return cls(coeff, source="dict")

    @classmethod
    def fit(cls, atomic_numbers: Sequence[np.ndarray], energies: Sequence[float]) -> ElementReferences:
        """Least-squares E0s from structures' compositions ``[n_s]`` and total energies (eV)."""
        if len(atomic_numbers) == 0:
            raise EquimolInputError("cannot fit element references on zero structures")
        species = np.unique(np.concatenate([np.asarray(z) for z in atomic_numbers]))
        column = {int(z): k for k, z in enumerate(species)}
        counts = np.zeros((len(atomic_numbers), len(species)))
        for row, numbers in enumerate(atomic_numbers):
            for z, count in zip(*np.unique(np.asarray(numbers), return_counts=True)):
                counts[row, column[int(z)]] = count
        solution, *_ = np.linalg.lstsq(counts, np.asarray(energies, dtype=np.float64), rcond=None)
        coeff = np.full(NUM_ELEMENTS, np.nan)
        coeff[species] = solution
        return cls(coeff, source="least-squares fit")

    def energy(self, atomic_numbers: np.ndarray, where: str = "") -> float:
        """:math:`\\sum_i c_{Z_i}` for one structure's ``[n]`` atomic numbers (eV)."""
        values = self.coeff[np.asarray(atomic_numbers, dtype=np.int64)]
        if np.isnan(values).any():
            missing = sorted({chemical_symbols[z] for z in np.asarray(atomic_numbers)[np.isnan(values)]})
            raise DataFormatError(f"{where}: no reference energy for element(s) {missing} in {self.source}")
        return float(values.sum())

    def as_dict(self) -> dict[int, float]:
        """``{Z: coeff}`` for the elements that have a coefficient."""
        return {int(z): float(self.coeff[z]) for z in np.flatnonzero(~np.isnan(self.coeff))}


def load_element_references(spec: str | Path | Mapping | None, energy_key: str = "energy") -> ElementReferences | None:
    """Resolve a config value: ``None``, a dict, an ``.npz`` (``coeff[Z]``) or an isolated-atoms file."""
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        return ElementReferences.from_dict(spec)
    path = Path(spec)
    if path.suffix == ".npz":
        return ElementReferences.from_npz(path)
    return ElementReferences.from_isolated_atoms(path, energy_key)


class SystemReferences:
    """Per-system reference energies ``{sid: eV}`` for adsorption-energy targets."""

    def __init__(self, energies: Mapping[object, float] | None = None, source: str = "dict") -> None:
        self.energies = {str(k): float(v) for k, v in (energies or {}).items()}
        self.source = source

    @classmethod
    def load(cls, spec: str | Path | Mapping | None) -> SystemReferences:
        """From ``None`` (frames carry ``reference_energy``), a dict, or a ``.pkl``/``.json`` mapping file."""
        if spec is None or isinstance(spec, Mapping):
            return cls(spec)
        path = Path(spec)
        if not path.exists():
            raise FileNotFoundError(f"system reference file {str(path)!r} does not exist")
        if path.suffix == ".json":
            mapping = json.loads(path.read_text())
        else:  # OC20's oc20_ref.pkl: {sid: energy}, with numpy scalars; unpickled with nothing else importable
            mapping = restricted_loads(path.read_bytes(), str(path))
        if not isinstance(mapping, Mapping):
            raise DataFormatError(f"{path}: expected a mapping {{system id: energy}}, got {type(mapping).__name__}")
        return cls(mapping, source=str(path))

    def energy(self, sid: object, stored: float | None, where: str = "") -> float:
        """The frame's own ``reference_energy`` when stored, else the mapping's entry for ``sid``."""
        if stored is not None:
            return float(stored)
        key = str(sid)
        if key not in self.energies:
            raise DataFormatError(
                f"{where}: no per-system reference energy for system {key!r} "
                f"(the frame has no reference_energy and {self.source} has no entry)"
            )
        return self.energies[key]
