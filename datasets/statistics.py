"""Dataset statistics the model needs, computed once and cached, invalidated when the data change.

Over structures :math:`s` with :math:`n_s` atoms, :math:`|E_s|` edges (the radius graph at the
configured cutoff), energies :math:`E_s` (after the configured references) and forces
:math:`F_{ia}` on the atoms in the force mask:

- ``avg_num_neighbors`` :math:`= \\sum_s |E_s| / \\sum_s n_s` (the message-passing normalization);
- ``per_species_energy_shift`` :math:`c_Z` minimizing :math:`\\sum_s (E_s - \\sum_Z A_{sZ} c_Z)^2`,
  :math:`A_{sZ}` = atoms of element :math:`Z` in :math:`s` (minimum-norm least squares);
- ``energy_residual_rms_per_atom`` :math:`= \\sqrt{\\langle ((E_s - A_s c)/n_s)^2 \\rangle_s}`;
- ``force_rms`` :math:`= \\sqrt{\\langle F_{ia}^2 \\rangle}` over masked atoms and components, and
  ``per_species_force_rms`` the same restricted to element :math:`Z` (the per-species scale);
- ``atom_counts``/``edge_counts`` per structure (for edge-bounded batching).

**Cache.** One JSON file per (data files, settings, subset), named by a hash of each data file's
absolute path, size and modification time plus every setting that changes a number; rewriting a
file changes its size or mtime, hence the key, hence a recomputation. It is kept beside the data,
in ``.equimol_statistics/`` next to the first data file, when that folder is writable; read-only
data folders (shared copies, CI) fall back to ``<cache_root()>/dataset_statistics``
(``$EQUIMOL_CACHE_DIR``, else ``$XDG_CACHE_HOME/equimol``, else ``~/.cache/equimol``). An explicit
``cache_dir`` overrides both.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from equimol.graph import neighbor_list
from equimol.utils.io import atomic_write, cache_root

from .atoms_dataset import AtomsDataset, reference_energy
from .readers import DataFormatError

_VERSION = 1


@dataclass
class DatasetStatistics:
    """Summary of a dataset (subset); see the module docstring for the definitions. Units eV, Å, eV/Å."""

    num_structures: int
    num_atoms: int
    species: list[int]
    avg_num_neighbors: float
    energy_mean: float
    energy_std: float
    per_species_energy_shift: dict[int, float]
    energy_residual_rms_per_atom: float
    force_rms: float
    per_species_force_rms: dict[int, float]
    atom_counts: list[int]
    edge_counts: list[int]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> DatasetStatistics:
        fields = json.loads(text)
        for key in ("per_species_energy_shift", "per_species_force_rms"):
            fields[key] = {int(z): v for z, v in fields[key].items()}
        return cls(**fields)

    def summary(self) -> str:
        """Human-readable lines (``equimol data stats``)."""
        from ase.data import chemical_symbols

        species = ", ".join(chemical_symbols[z] for z in self.species)
        shifts = ", ".join(f"{chemical_symbols[z]}: {v:.6f}" for z, v in self.per_species_energy_shift.items())
        scales = ", ".join(f"{chemical_symbols[z]}: {v:.6f}" for z, v in self.per_species_force_rms.items())
        return "\n".join(
            [
                f"structures                 {self.num_structures}",
                f"atoms                      {self.num_atoms}",
                f"species                    {species}",
                f"average neighbors          {self.avg_num_neighbors:.6f}",
                f"edges per structure        min {min(self.edge_counts)}, max {max(self.edge_counts)}",
                f"energy mean / std (eV)     {self.energy_mean:.6f} / {self.energy_std:.6f}",
                f"per-species shift (eV)     {shifts}",
                f"residual rms per atom (eV) {self.energy_residual_rms_per_atom:.6f}",
                f"force rms (eV/A)           {self.force_rms:.6f}",
                f"per-species force rms      {scales}",
            ]
        )


def compute_statistics(
    dataset: AtomsDataset, indices: Sequence[int] | None = None, progress: bool = False
) -> DatasetStatistics:
    """Statistics of ``dataset`` restricted to ``indices`` (all frames when ``None``), in float64."""
    indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    if not indices:
        raise ValueError("cannot compute statistics of an empty dataset")
    settings = dataset.settings
    numbers_list, energies, atom_counts, edge_counts = [], [], [], []
    force_sq_sum: dict[int, float] = {}
    force_count: dict[int, int] = {}
    for index in tqdm(indices, disable=not progress, unit="frame", desc="statistics"):
        record = dataset.record(index)
        numbers = record.atomic_numbers.numpy()
        cell, pbc = record.cell.reshape(3, 3).numpy(), record.pbc.reshape(3).numpy()
        try:
            sender, _, _ = neighbor_list(record.pos.numpy(), cell, pbc, settings.radial_cutoff)
        except RuntimeError as error:  # vesin: e.g. a periodic frame whose cell is singular
            where = dataset.where(index)
            raise DataFormatError(f"{where}: no neighbor list ({error}); pbc={pbc.tolist()}") from error
        numbers_list.append(numbers)
        atom_counts.append(int(numbers.shape[0]))
        edge_counts.append(int(sender.shape[0]))
        if "energy" in record:
            energies.append(record.energy - reference_energy(record, settings, dataset.where(index)))
        if "forces" in record:
            mask = ~record.fixed.numpy() if settings.forces_on == "free" else np.ones(numbers.shape[0], dtype=bool)
            squares = (record.forces.numpy() ** 2).sum(axis=1)
            for z in np.unique(numbers[mask]):
                selected = mask & (numbers == z)
                force_sq_sum[int(z)] = force_sq_sum.get(int(z), 0.0) + float(squares[selected].sum())
                force_count[int(z)] = force_count.get(int(z), 0) + 3 * int(selected.sum())
    species = sorted({int(z) for numbers in numbers_list for z in np.unique(numbers)})
    shift: dict[int, float] = {}
    residual_rms = float("nan")
    energy_mean = energy_std = float("nan")
    if len(energies) == len(indices):
        energy_array = np.asarray(energies)
        counts = np.zeros((len(indices), len(species)))
        for row, numbers in enumerate(numbers_list):
            for z, count in zip(*np.unique(numbers, return_counts=True)):
                counts[row, species.index(int(z))] = count
        solution, *_ = np.linalg.lstsq(counts, energy_array, rcond=None)
        shift = {z: float(c) for z, c in zip(species, solution)}
        residual_rms = float(np.sqrt(np.mean(((energy_array - counts @ solution) / np.asarray(atom_counts)) ** 2)))
        energy_mean, energy_std = float(energy_array.mean()), float(energy_array.std())
    total_sq, total_count = sum(force_sq_sum.values()), sum(force_count.values())
    return DatasetStatistics(
        num_structures=len(indices),
        num_atoms=int(sum(atom_counts)),
        species=species,
        avg_num_neighbors=float(sum(edge_counts) / sum(atom_counts)),
        energy_mean=energy_mean,
        energy_std=energy_std,
        per_species_energy_shift=shift,
        energy_residual_rms_per_atom=residual_rms,
        force_rms=float(np.sqrt(total_sq / total_count)) if total_count else float("nan"),
        per_species_force_rms={z: float(np.sqrt(force_sq_sum[z] / force_count[z])) for z in sorted(force_sq_sum)},
        atom_counts=atom_counts,
        edge_counts=edge_counts,
    )


def default_cache_dir() -> Path:
    """``<cache_root()>/dataset_statistics`` (:func:`equimol.utils.io.cache_root`)."""
    return cache_root() / "dataset_statistics"


def statistics_key(dataset: AtomsDataset, indices: Sequence[int] | None) -> str:
    """Hash of the data files (path, size, mtime) and every setting that changes the statistics."""
    settings = dataset.settings
    files = []
    for file in dataset.files():
        stat = Path(file).stat()
        files.append([str(Path(file).resolve()), stat.st_size, stat.st_mtime_ns])
    element = settings.element_references
    system = settings.system_references
    description = {
        "version": _VERSION,
        "files": files,
        "radial_cutoff": float(settings.radial_cutoff),
        "energy_target": settings.energy_target,
        "forces_on": settings.forces_on,
        "keys": [dataset.keys.energy_key, dataset.keys.forces_key, dataset.keys.stress_key],
        "element_references": None if element is None else sorted(element.as_dict().items()),
        "system_references": None if system is None else sorted(system.energies.items()),
        "indices": None
        if indices is None
        else hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32]


def cached_statistics(
    dataset: AtomsDataset,
    indices: Sequence[int] | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> DatasetStatistics:
    """:func:`compute_statistics`, read from / written to the cache (see the module docstring)."""
    key = statistics_key(dataset, indices)
    folders = [Path(cache_dir)] if cache_dir is not None else [*_beside_data(dataset), default_cache_dir()]
    for folder in folders:
        path = folder / f"{key}.json"
        if path.exists():
            try:
                return DatasetStatistics.from_json(path.read_text())
            except (ValueError, TypeError, KeyError):
                pass  # an unreadable cache entry (interrupted write, older layout) is recomputed
    statistics = compute_statistics(dataset, indices, progress)
    for folder in folders:
        try:
            with atomic_write(folder / f"{key}.json", "w") as handle:  # concurrent readers never see half a file
                handle.write(statistics.to_json())
            break
        except OSError:
            continue  # read-only data folder: try the next location
    return statistics


def _beside_data(dataset: AtomsDataset) -> list[Path]:
    """``[<folder of the first data file>/.equimol_statistics]`` when that folder is writable, else ``[]``.

    A folder without write bits counts as read-only even for root, who could write into it anyway:
    shared, read-only dataset copies stay untouched.
    """
    files = list(dataset.files())
    if not files:
        return []
    parent = Path(files[0]).resolve()
    parent = parent if parent.is_dir() else parent.parent
    writable = bool(parent.stat().st_mode & 0o200) and os.access(parent, os.W_OK)
    return [parent / ".equimol_statistics"] if writable else []
