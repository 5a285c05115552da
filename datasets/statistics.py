"""Dataset statistics the model needs, computed once and cached, invalidated when the data change.

Over structures :math:`s` with :math:`n_s` atoms, :math:`|E_s|` edges (the radius graph at the
configured cutoff), energies :math:`E_s` (after the configured references) and forces
:math:`F_{ia}` on the atoms in the force mask, both minus the model's physical terms when given
(``physical``: ZBL, D3, :class:`equimol.models.physical.PhysicalTerms`; the learned part of the model
fits that residual, so its shift and scale come from it):

- ``avg_num_neighbors`` :math:`= \\sum_s |E_s| / \\sum_s n_s` (the message-passing normalization);
- ``per_species_energy_shift`` :math:`c_Z` minimizing :math:`\\sum_s (E_s - \\sum_Z A_{sZ} c_Z)^2`,
  :math:`A_{sZ}` = atoms of element :math:`Z` in :math:`s` (minimum-norm least squares);
- ``energy_residual_rms_per_atom`` :math:`= \\sqrt{\\langle ((E_s - A_s c)/n_s)^2 \\rangle_s}`;
- ``force_rms`` :math:`= \\sqrt{\\langle F_{ia}^2 \\rangle}` over masked atoms and components, and
  ``per_species_force_rms`` the same restricted to element :math:`Z` (the per-species scale);
- ``atom_counts``/``edge_counts`` per sampled structure (they calibrate the edge estimate of
  edge-bounded batching, :math:`|E_s| \\approx` ``avg_num_neighbors`` :math:`\\cdot n_s`).

**Sample.** The sums run over a seeded simple random sample of ``sample_size`` of the split's
:math:`N` structures (all of them when :math:`N` is at most the sample size), so the cost before
training does not grow with the dataset: about 0.6 ms per sampled frame for its neighbor list.
Each estimate carries its standard error under that sampling, with the finite-population factor
:math:`1 - n/N` (0 when the sample is the whole split): ratio-estimator errors for
``avg_num_neighbors`` and the mean square force (delta method for ``force_rms``), and
least-squares errors for ``per_species_energy_shift``.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from equimol.graph import neighbor_list
from equimol.structure_checks import StructureError
from equimol.utils.io import atomic_write, cache_root

from .atoms_dataset import AtomsDataset, check_min_distance, reference_energy

if TYPE_CHECKING:
    from equimol.models.physical import PhysicalTerms
from equimol.errors import EquimolInputError

from .readers import DataFormatError
from .statistics_sharing import wait_for_file, waits_for_first_process

_VERSION = 3  # 2: seeded sample and standard errors; 3: minus the physical terms


@dataclass(eq=False)
class DatasetStatistics:
    """Summary of a dataset (subset), estimated on a seeded sample; see the module docstring. Units eV, Å, eV/Å.

    ``num_structures`` counts the whole split; ``sample_size`` the frames the numbers come from
    (equal when the split is small), ``sample_positions`` their positions in the split, and
    ``num_atoms``, ``atom_counts``, ``edge_counts`` refer to the sample. The ``*_se`` fields are
    standard errors of the estimates (0 when the sample is the whole split; ``nan`` where the
    estimate has none, e.g. shifts of species that every structure holds in the same proportion).
    """

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
    sample_size: int = 0
    sample_seed: int = 0
    sample_positions: list[int] = field(default_factory=list)
    avg_num_neighbors_se: float = float("nan")
    force_rms_se: float = float("nan")
    per_species_energy_shift_se: dict[int, float] = field(default_factory=dict)

    @property
    def is_complete(self) -> bool:
        """Whether the sample is the whole split (then ``edge_counts`` are every structure's, in split order)."""
        return self.sample_size == self.num_structures

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    def __eq__(self, other: object) -> bool:  # field by field, with nan equal to nan (undefined errors)
        return isinstance(other, DatasetStatistics) and self.to_json() == other.to_json()

    @classmethod
    def from_json(cls, text: str) -> DatasetStatistics:
        fields = json.loads(text)
        for key in ("per_species_energy_shift", "per_species_force_rms", "per_species_energy_shift_se"):
            fields[key] = {int(z): v for z, v in fields[key].items()}
        return cls(**fields)

    def sampling_report(self) -> dict[str, object]:
        """The sample and the standard errors of its estimates (for the run log and ``config.yaml``)."""
        return {
            "num_structures": self.num_structures,
            "sample_size": self.sample_size,
            "sample_seed": self.sample_seed,
            "avg_num_neighbors": self.avg_num_neighbors,
            "avg_num_neighbors_se": self.avg_num_neighbors_se,
            "force_rms": self.force_rms,
            "force_rms_se": self.force_rms_se,
            "per_species_energy_shift_se": dict(self.per_species_energy_shift_se),
        }

    def summary(self) -> str:
        """Human-readable lines (``equimol data stats``)."""
        from ase.data import chemical_symbols

        def per_species(values: dict[int, float]) -> str:
            return ", ".join(f"{chemical_symbols[z]}: {v:.6f}" for z, v in values.items())

        species = ", ".join(chemical_symbols[z] for z in self.species)
        return "\n".join(
            [
                f"structures                 {self.num_structures}",
                f"sample (seed {self.sample_seed})".ljust(27)
                + f"{self.sample_size} structures, {self.num_atoms} atoms",
                f"species                    {species}",
                f"average neighbors          {self.avg_num_neighbors:.6f} +- {self.avg_num_neighbors_se:.2g} (s.e.)",
                f"edges per structure        min {min(self.edge_counts)}, max {max(self.edge_counts)} (sample)",
                f"energy mean / std (eV)     {self.energy_mean:.6f} / {self.energy_std:.6f}",
                f"per-species shift (eV)     {per_species(self.per_species_energy_shift)}",
                f"shift standard error (eV)  {per_species(self.per_species_energy_shift_se)}",
                f"residual rms per atom (eV) {self.energy_residual_rms_per_atom:.6f}",
                f"force rms (eV/A)           {self.force_rms:.6f} +- {self.force_rms_se:.2g} (s.e.)",
                f"per-species force rms      {per_species(self.per_species_force_rms)}",
            ]
        )


def sample_positions(population: int, sample_size: int | None, seed: int) -> np.ndarray:
    """``[min(sample_size, population)]`` sorted positions drawn without replacement (all when ``None``).

    Floyd's method inside ``Generator.choice``: the cost grows with the sample, not the population.
    """
    if sample_size is None or sample_size >= population:
        return np.arange(population)
    if sample_size < 2:
        raise ValueError(f"statistics sample size must be >= 2 (for its standard errors), got {sample_size}")
    return np.sort(np.random.default_rng([seed, 0x57A75]).choice(population, size=sample_size, replace=False))


def ratio_standard_error(numerator: np.ndarray, denominator: np.ndarray, population: int) -> float:
    r"""Standard error of the ratio estimator :math:`R = \sum_i y_i / \sum_i x_i` over a simple random sample.

    :math:`\mathrm{SE}^2 = (1 - n/N)\, s^2 / (n \bar x^2)` with :math:`s^2 = \sum_i (y_i - R x_i)^2 / (n-1)`
    (Cochran, *Sampling Techniques*, 6.3); 0 when the sample is the population (:math:`n = N`).

    Args:
        numerator, denominator: ``[n]`` per-structure :math:`y_i` and :math:`x_i`.
        population: :math:`N`, structures in the split.
    """
    n = numerator.shape[0]
    if n >= population:
        return 0.0
    if n < 2 or denominator.sum() == 0:
        return float("nan")
    ratio = numerator.sum() / denominator.sum()
    spread = ((numerator - ratio * denominator) ** 2).sum() / (n - 1)
    return float(np.sqrt((1.0 - n / population) * spread / n) / denominator.mean())


def least_squares_standard_errors(design: np.ndarray, residual: np.ndarray, population: int) -> np.ndarray:
    r"""``[p]`` standard errors of ordinary least-squares coefficients, :math:`\sigma^2 (A^\top A)^{-1}`.

    :math:`\sigma^2 = \lVert r \rVert^2 / (n - p)`, times the finite-population factor :math:`1 - n/N`.
    ``nan`` for every coefficient when :math:`A` (``[n, p]``) lacks full column rank (the shifts are
    then not identifiable one by one) or :math:`n \le p`.
    """
    n, p = design.shape
    if n >= population:
        return np.zeros(p)
    if n <= p or np.linalg.matrix_rank(design) < p:
        return np.full(p, np.nan)
    variance = float(residual @ residual) / (n - p)
    covariance = variance * np.linalg.inv(design.T @ design)
    return np.sqrt(np.clip(np.diag(covariance), 0.0, None) * (1.0 - n / population))


def compute_statistics(
    dataset: AtomsDataset,
    indices: Sequence[int] | None = None,
    progress: bool = False,
    sample_size: int | None = None,
    seed: int = 0,
    physical: PhysicalTerms | None = None,
) -> DatasetStatistics:
    """Statistics of ``dataset`` restricted to ``indices`` (all frames when ``None``), in float64.

    Args:
        dataset: the frames.
        indices: ``[N]`` frames of the split (all when ``None``).
        progress: show a progress bar.
        sample_size: estimate from a seeded sample of this many frames (all ``N`` when ``None`` or ``>= N``);
            the neighbor lists, the only costly part, are built for the sample only.
        seed: the sample's seed.
        physical: the model's physical terms (float64), subtracted from energies and forces first.
    """
    population = len(dataset) if indices is None else len(indices)
    if population == 0:
        raise EquimolInputError("cannot compute statistics of an empty dataset")
    positions = sample_positions(population, sample_size, seed)
    frames = positions if indices is None else np.asarray(indices, dtype=np.int64)[positions]
    settings = dataset.settings
    numbers_list, energies, atom_counts, edge_counts = [], [], [], []
    force_sq_sum: dict[int, float] = {}
    force_count: dict[int, int] = {}
    frame_sq, frame_count = np.zeros(len(frames)), np.zeros(len(frames))
    for row, index in enumerate(tqdm(frames.tolist(), disable=not progress, unit="frame", desc="statistics")):
        record = dataset.record(index)
        numbers = record.atomic_numbers.numpy()
        cell, pbc = record.cell.reshape(3, 3).numpy(), record.pbc.reshape(3).numpy()
        try:
            sender, receiver, offsets = neighbor_list(record.pos.numpy(), cell, pbc, settings.radial_cutoff)
        except StructureError as error:  # a degenerate or far too small periodic cell
            raise DataFormatError(f"{dataset.where(index)}: {error}") from error
        except RuntimeError as error:  # vesin
            where = dataset.where(index)
            raise DataFormatError(f"{where}: no neighbor list ({error}); pbc={pbc.tolist()}") from error
        if settings.min_distance is not None:
            box = cell if pbc.any() else np.zeros((3, 3))
            check_min_distance(
                record.pos.numpy(), box, (sender, receiver, offsets), settings.min_distance, dataset.where(index)
            )
        numbers_list.append(numbers)
        atom_counts.append(int(numbers.shape[0]))
        edge_counts.append(int(sender.shape[0]))
        physical_energy, physical_forces = 0.0, 0.0
        if physical is not None and ("energy" in record or "forces" in record):
            physical_energy, physical_forces = physical.energy_and_forces(record.pos.numpy(), numbers, cell, pbc)
        if "energy" in record:
            energies.append(record.energy - reference_energy(record, settings, dataset.where(index)) - physical_energy)
        if "forces" in record:
            mask = ~record.fixed.numpy() if settings.forces_on == "free" else np.ones(numbers.shape[0], dtype=bool)
            squares = ((record.forces.numpy() - physical_forces) ** 2).sum(axis=1)
            frame_sq[row], frame_count[row] = float(squares[mask].sum()), 3.0 * int(mask.sum())
            for z in np.unique(numbers[mask]):
                selected = mask & (numbers == z)
                force_sq_sum[int(z)] = force_sq_sum.get(int(z), 0.0) + float(squares[selected].sum())
                force_count[int(z)] = force_count.get(int(z), 0) + 3 * int(selected.sum())
    species = sorted({int(z) for numbers in numbers_list for z in np.unique(numbers)})
    shift: dict[int, float] = {}
    shift_se: dict[int, float] = {}
    residual_rms = float("nan")
    energy_mean = energy_std = float("nan")
    if len(energies) == len(frames):
        energy_array = np.asarray(energies)
        counts = np.zeros((len(frames), len(species)))
        for row, numbers in enumerate(numbers_list):
            for z, count in zip(*np.unique(numbers, return_counts=True)):
                counts[row, species.index(int(z))] = count
        solution, *_ = np.linalg.lstsq(counts, energy_array, rcond=None)
        residual = energy_array - counts @ solution
        shift = {z: float(c) for z, c in zip(species, solution)}
        errors = least_squares_standard_errors(counts, residual, population)
        shift_se = {z: float(e) for z, e in zip(species, errors)}
        residual_rms = float(np.sqrt(np.mean((residual / np.asarray(atom_counts)) ** 2)))
        energy_mean, energy_std = float(energy_array.mean()), float(energy_array.std())
    total_sq, total_count = sum(force_sq_sum.values()), sum(force_count.values())
    force_rms = float(np.sqrt(total_sq / total_count)) if total_count else float("nan")
    # delta method: SE(sqrt(m)) = SE(m) / (2 sqrt(m))
    force_rms_se = (
        ratio_standard_error(frame_sq, frame_count, population) / (2 * force_rms) if total_sq else float("nan")
    )
    atoms, edges = np.asarray(atom_counts, dtype=float), np.asarray(edge_counts, dtype=float)
    return DatasetStatistics(
        num_structures=population,
        num_atoms=int(sum(atom_counts)),
        species=species,
        avg_num_neighbors=float(sum(edge_counts) / sum(atom_counts)),
        energy_mean=energy_mean,
        energy_std=energy_std,
        per_species_energy_shift=shift,
        energy_residual_rms_per_atom=residual_rms,
        force_rms=force_rms,
        per_species_force_rms={z: float(np.sqrt(force_sq_sum[z] / force_count[z])) for z in sorted(force_sq_sum)},
        atom_counts=atom_counts,
        edge_counts=edge_counts,
        sample_size=len(frames),
        sample_seed=seed,
        sample_positions=[] if len(frames) == population else positions.tolist(),
        avg_num_neighbors_se=ratio_standard_error(edges, atoms, population),
        force_rms_se=force_rms_se,
        per_species_energy_shift_se=shift_se,
    )


def default_cache_dir() -> Path:
    """``<cache_root()>/dataset_statistics`` (:func:`equimol.utils.io.cache_root`)."""
    return cache_root() / "dataset_statistics"


def statistics_key(
    dataset: AtomsDataset,
    indices: Sequence[int] | None,
    sample_size: int | None = None,
    seed: int = 0,
    physical: PhysicalTerms | None = None,
) -> str:
    """Hash of the data files (path, size, mtime), the sample and every setting that changes the statistics."""
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
        "sample": [sample_size, seed],
        "physical": None if physical is None else physical.description,
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32]


def cached_statistics(
    dataset: AtomsDataset,
    indices: Sequence[int] | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    sample_size: int | None = None,
    seed: int = 0,
    physical: PhysicalTerms | None = None,
) -> DatasetStatistics:
    """:func:`compute_statistics`, read from / written to the cache (see the module docstring).

    In a distributed launch only the first process of each machine computes a missing entry; the
    others wait for its file (:mod:`.statistics_sharing`).
    """
    key = statistics_key(dataset, indices, sample_size, seed, physical)
    folders = [Path(cache_dir)] if cache_dir is not None else [*_beside_data(dataset), default_cache_dir()]
    for folder in folders:
        path = folder / f"{key}.json"
        if path.exists():
            try:
                return DatasetStatistics.from_json(path.read_text())
            except (ValueError, TypeError, KeyError):
                pass  # an unreadable cache entry (interrupted write, older layout) is recomputed
    if waits_for_first_process():
        shared = wait_for_file([folder / f"{key}.json" for folder in folders], DatasetStatistics.from_json)
        if shared is not None:
            return shared
    statistics = compute_statistics(dataset, indices, progress, sample_size, seed, physical)
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
