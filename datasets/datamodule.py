"""Lightning DataModules: one general :class:`AtomsDataModule` and thin presets for 3BPA, OC20 and OC22.

The constructor arguments are the keys of a YAML ``data:`` section, one to one
(``AtomsDataModule(**config["data"])`` or, with a message listing the valid keys on a typo,
``AtomsDataModule.from_config(config["data"])``). Relative paths (data files and reference
files) are resolved under ``data_dir``, else under ``$EQUIMOL_DATA_DIR``, else the working folder.

Splits: ``val``/``test`` files when given, else ``val_fraction``/``test_fraction`` of the training
files, drawn by a ``numpy.random.default_rng(seed)`` permutation (the same seed gives the same
split on every machine). Batches hold ``batch_size`` structures, or, with ``max_edges``, as many
structures as fit in that many edges (``batch_size`` then caps the count only if
``max_structures_per_batch`` is set). The model's statistics (:mod:`equimol.datasets.statistics`)
come from the training split and are cached.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import Subset
from torch_geometric.loader import DataLoader

from equimol.utils.dtype import resolve_dtype

from .atoms_dataset import AtomsDataset, LabelSettings, reference_energy
from .readers import LabelKeys
from .references import ElementReferences, SystemReferences, load_element_references
from .samplers import EdgeBudgetBatchSampler, StructureBatchSampler
from .statistics import DatasetStatistics, cached_statistics, sample_positions

DATA_DIR_VARIABLE = "EQUIMOL_DATA_DIR"
PathSpec = str | Path | Sequence[str | Path] | None


def resolve_data_path(path: str | Path, data_dir: str | Path | None = None) -> Path:
    """Absolute paths stay; relative ones go under ``data_dir``, else ``$EQUIMOL_DATA_DIR``, else the working folder."""
    path = Path(path).expanduser()
    if path.is_absolute():
        resolved = path
    else:
        root = data_dir if data_dir is not None else os.environ.get(DATA_DIR_VARIABLE)
        resolved = Path(root).expanduser() / path if root else path
    if not resolved.exists():
        hint = "" if path.is_absolute() else f" (relative paths resolve under data_dir or ${DATA_DIR_VARIABLE})"
        raise FileNotFoundError(f"data path {str(resolved)!r} does not exist{hint}")
    return resolved


def _as_list(spec: PathSpec) -> list[str | Path]:
    if spec is None:
        return []
    return [spec] if isinstance(spec, str | Path) else list(spec)


class AtomsDataModule(L.LightningDataModule):
    """Graphs from ASE files, OC20 raw S2EF pairs and OC20/OC22 LMDBs (see the module docstring).

    Args:
        train, val, test: a data path or a list of them (``*.lmdb``, ``*.extxyz[.xz]``+``.txt``, any ASE file).
        data_dir: root of relative paths (default ``$EQUIMOL_DATA_DIR``).
        radial_cutoff: graph cutoff, Å.
        dtype: ``"float64"``/``"float32"`` or a torch dtype, for positions and float labels.
        energy_key, forces_key, stress_key: label names in the files (``None`` skips forces/stress).
        energy_target: ``"total"`` (stored energies) or ``"adsorption"`` (minus per-system references).
        element_references: ``None``, ``"fit"`` (least squares on the training split), a dict
            ``{element: eV}``, an ``.npz`` with ``coeff[Z]``, or an isolated-atoms file (E0s).
        system_references: for ``"adsorption"``: ``None`` (frames' ``reference_energy``), a dict, or a
            ``.pkl``/``.json`` file ``{sid: eV}``.
        forces_on: ``"all"`` or ``"free"`` (fixed atoms' forces are masked out of the loss).
        val_fraction, test_fraction: fractions of the training files split off when no val/test files are given.
        seed: split and shuffle seed.
        batch_size: structures per batch (training); ``eval_batch_size`` for val/test (default ``batch_size``).
        max_edges: bound on edges per batch instead of a structure count.
        max_structures_per_batch: optional cap on structures in an edge-bounded batch.
        num_workers: DataLoader worker processes.
        pin_memory: pin batches in page-locked memory.
        cache_dir: where statistics are cached (default ``<cache_root()>/dataset_statistics``).
        statistics_sample: statistics come from a seeded sample of this many structures of a split
            (all of them when the split is no larger, or when ``None``); the report carries their
            standard errors. With ``max_edges`` and a sampled split, each structure's edges are
            estimated as ``avg_num_neighbors`` times its atom count (LMDBs: their atom-count index).
        min_distance: a frame with two atoms closer than this (Å) is an error naming the file and
            frame (default 0.5 Å, below any bond length); ``None`` allows any distance.
    """

    def __init__(
        self,
        train: PathSpec = None,
        val: PathSpec = None,
        test: PathSpec = None,
        data_dir: str | None = None,
        radial_cutoff: float = 5.0,
        dtype: str | torch.dtype = "float64",
        energy_key: str = "energy",
        forces_key: str | None = "forces",
        stress_key: str | None = "stress",
        energy_target: str = "total",
        element_references: str | Mapping | None = None,
        system_references: str | Mapping | None = None,
        forces_on: str = "all",
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        seed: int = 0,
        batch_size: int = 5,
        eval_batch_size: int | None = None,
        max_edges: int | None = None,
        max_structures_per_batch: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache_dir: str | None = None,
        statistics_sample: int | None = 2000,
        min_distance: float | None = 0.5,
    ) -> None:
        super().__init__()
        if energy_target not in ("total", "adsorption"):
            raise ValueError(f"energy_target must be 'total' or 'adsorption', got {energy_target!r}")
        if forces_on not in ("all", "free"):
            raise ValueError(f"forces_on must be 'all' or 'free', got {forces_on!r}")
        if not 0.0 <= val_fraction < 1.0 or not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
            raise ValueError(f"val_fraction={val_fraction}, test_fraction={test_fraction}: each in [0, 1), sum < 1")
        for name, value, least in (
            ("batch_size", batch_size, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("max_edges", max_edges, 1),
            ("max_structures_per_batch", max_structures_per_batch, 1),
            ("num_workers", num_workers, 0),
            ("min_distance", min_distance, 0),
        ):
            if value is not None and not value >= least:
                raise ValueError(f"{name} must be >= {least}, got {value}")
        if statistics_sample is not None and statistics_sample < 2:
            raise ValueError(f"statistics_sample must be >= 2 structures or null (all), got {statistics_sample}")
        if not radial_cutoff > 0:
            raise ValueError(f"radial_cutoff must be > 0 Å, got {radial_cutoff}")
        if not _as_list(train):
            raise ValueError("train: at least one training data path is required")
        self.config = {key: value for key, value in locals().items() if key not in ("self", "__class__")}
        self.save_hyperparameters(self.config)  # recorded in Lightning checkpoints
        self.data_dir = data_dir
        self.dtype = resolve_dtype(dtype)
        self.keys = LabelKeys(energy_key, forces_key, stress_key, require_forces=forces_key is not None)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.max_edges, self.max_structures_per_batch = max_edges, max_structures_per_batch
        self.num_workers, self.pin_memory, self.seed, self.cache_dir = num_workers, pin_memory, seed, cache_dir
        self.datasets: dict[str, AtomsDataset | None] = {}
        self.indices: dict[str, np.ndarray] = {}
        self._statistics: dict[str, DatasetStatistics] = {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AtomsDataModule:
        """Build from a ``data:`` mapping; an unknown key raises an error naming it and the valid keys."""
        import inspect

        valid = [name for name in inspect.signature(AtomsDataModule.__init__).parameters if name != "self"]
        unknown = sorted(set(config) - set(valid))
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown data key(s) {unknown}; valid keys: {sorted(valid)}")
        return cls(**config)

    def _paths(self, spec: PathSpec) -> list[Path]:
        return [resolve_data_path(p, self.data_dir) for p in _as_list(spec)]

    def _reference_spec(self, spec: Any) -> Any:
        if isinstance(spec, str | Path) and str(spec) != "fit":
            return resolve_data_path(spec, self.data_dir)
        return spec

    def setup(self, stage: str | None = None) -> None:
        """Open the data files (lazily for LMDB), split them and resolve the references; idempotent."""
        if self.datasets:
            return
        config = self.config
        system = SystemReferences.load(self._reference_spec(config["system_references"]))
        element_spec = config["element_references"]
        settings = LabelSettings(
            radial_cutoff=float(config["radial_cutoff"]),
            dtype=self.dtype,
            energy_target=config["energy_target"],
            element_references=None
            if element_spec == "fit"
            else load_element_references(self._reference_spec(element_spec), config["energy_key"]),
            system_references=system,
            forces_on=config["forces_on"],
            min_distance=config["min_distance"],
        )
        train = AtomsDataset(self._paths(config["train"]), settings, self.keys)
        order = np.random.default_rng(self.seed).permutation(len(train))
        n_val = int(round(config["val_fraction"] * len(train))) if config["val"] is None else 0
        n_test = int(round(config["test_fraction"] * len(train))) if config["test"] is None else 0
        for split, count in (("val", n_val), ("test", n_test)):
            fraction = config[f"{split}_fraction"]
            if config[split] is None and fraction > 0 and count == 0:
                raise ValueError(
                    f"{split}_fraction={fraction} of {len(train)} training structures rounds to 0 structures; "
                    f"raise data.{split}_fraction to at least {0.5 / len(train):.2g} or give data.{split} files"
                )
        self.indices["train"] = np.sort(order[n_val + n_test :])
        if len(self.indices["train"]) == 0:
            raise ValueError(f"no training structures left after the split (of {len(train)})")
        if element_spec == "fit":
            settings = self._fit_references(train, settings)
        self.datasets["train"] = train
        for split, count, start in (("val", n_val, 0), ("test", n_test, n_val)):
            if config[split] is not None:
                dataset = AtomsDataset(self._paths(config[split]), settings, self.keys)
                self.datasets[split], self.indices[split] = dataset, np.arange(len(dataset))
            elif count:
                self.datasets[split], self.indices[split] = train, np.sort(order[start : start + count])
            else:
                self.datasets[split] = None

    def _fit_references(self, train: AtomsDataset, settings: LabelSettings) -> LabelSettings:
        numbers, energies = [], []
        no_elements = LabelSettings(**{**settings.__dict__, "element_references": None})
        # on the statistics sample: a least-squares fit of a few coefficients needs no full pass over the data
        split = self.indices["train"]
        for index in split[sample_positions(len(split), self.config["statistics_sample"], self.seed)]:
            record = train.record(int(index))
            numbers.append(record.atomic_numbers.numpy())
            energies.append(record.energy - reference_energy(record, no_elements, train.where(int(index))))
        fitted = LabelSettings(**{**settings.__dict__, "element_references": ElementReferences.fit(numbers, energies)})
        train.settings = fitted
        return fitted

    @property
    def element_references(self) -> ElementReferences | None:
        """The per-element references in use (after :meth:`setup`)."""
        self.setup()
        return self.datasets["train"].settings.element_references

    def statistics(self, split: str = "train") -> DatasetStatistics:
        """Cached statistics of a split (the model's normalization uses ``"train"``)."""
        self.setup()
        if self.datasets.get(split) is None:
            raise ValueError(f"split {split!r} has no data")
        if split not in self._statistics:
            self._statistics[split] = cached_statistics(
                self.datasets[split],
                self.indices[split],
                self.cache_dir,
                sample_size=self.config["statistics_sample"],
                seed=self.seed,
            )
        return self._statistics[split]

    def edge_counts(self, split: str) -> np.ndarray:
        """``[len(indices[split])]`` edges per structure: exact when the statistics saw the whole split, else
        ``ceil(avg_num_neighbors * atoms)`` from the atom counts (no neighbor-list pass over the data)."""
        statistics = self.statistics(split)
        if statistics.is_complete:
            return np.asarray(statistics.edge_counts, dtype=np.int64)
        atoms = self.datasets[split].atom_counts(self.indices[split])
        return np.ceil(statistics.avg_num_neighbors * atoms).astype(np.int64)

    def _loader(self, split: str, training: bool) -> DataLoader:
        self.setup()
        dataset = self.datasets.get(split)
        if dataset is None:
            raise ValueError(f"no {split} data: give {split}= files or a {split}_fraction")
        indices = self.indices[split]
        if self.max_edges is not None:
            sampler = EdgeBudgetBatchSampler(
                self.edge_counts(split),
                self.max_edges,
                self.max_structures_per_batch,
                shuffle=training,
                seed=self.seed,
                describe=lambda position: dataset.where(int(indices[position])),
            )
        else:
            size = self.batch_size if training else self.eval_batch_size
            sampler = StructureBatchSampler(len(indices), size, shuffle=training, seed=self.seed)
        return DataLoader(
            Subset(dataset, indices),  # the numpy array: a Python list would cost ~36 bytes a frame
            batch_sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", training=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", training=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", training=False)


class _Preset(AtomsDataModule):
    """An :class:`AtomsDataModule` whose unset arguments take the preset's values."""

    PRESET: dict[str, Any] = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**self.PRESET, **kwargs})


class ThreeBPADataModule(_Preset):
    """3BPA (Kovács et al. 2021): molecules in extxyz, E0s from ``iso_atoms.xyz``, 5 Å cutoff.

    Defaults (relative to ``data_dir``/``$EQUIMOL_DATA_DIR``): train ``3bpa/train_300K.xyz`` with
    5 % held out for validation, test ``3bpa/test_300K.xyz``. Every :class:`AtomsDataModule` argument applies.
    """

    PRESET = {
        "train": "3bpa/train_300K.xyz",
        "test": "3bpa/test_300K.xyz",
        "val_fraction": 0.05,
        "element_references": "3bpa/iso_atoms.xyz",
        "radial_cutoff": 5.0,
        "forces_on": "all",
        "batch_size": 5,
    }


class OC20DataModule(_Preset):
    """OC20 S2EF: LMDBs or raw ``extxyz.xz``/``txt.xz`` pairs; forces of free atoms only; 6 Å cutoff.

    ``energy_target="adsorption"`` subtracts per-system references (raw pairs carry them); fairchem's
    S2EF LMDBs already store adsorption energies, so keep ``"total"`` (= as stored) for them.
    """

    PRESET = {"radial_cutoff": 6.0, "forces_on": "free", "energy_target": "total"}


class OC22DataModule(_Preset):
    """OC22 S2EF-Total: LMDBs of total energies minus the linear references ``oc22/oc22_linfit_coeffs.npz``."""

    PRESET = {
        "radial_cutoff": 6.0,
        "forces_on": "free",
        "energy_target": "total",
        "element_references": "oc22/oc22_linfit_coeffs.npz",
    }
