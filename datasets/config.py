"""The ``data:`` section of a training config: one typed field per :class:`AtomsDataModule` argument.

:class:`DataConfig` is the single definition of the data options: their names, types, defaults and
checks. ``AtomsDataModule(config)`` (or ``AtomsDataModule(**fields)``) takes exactly these fields,
and ``equimol train`` checks a YAML ``data:`` section against them, value ranges included, before
any data are read and without importing Lightning. :func:`resolve_data_path` is the one rule for
where a relative data path lives.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DATA_DIR_VARIABLE = "EQUIMOL_DATA_DIR"
PathSpec = str | Path | Sequence[str | Path] | None


def resolve_data_path(path: str | Path, data_dir: str | Path | None = None) -> Path:
    """Absolute paths stay; relative ones go under ``data_dir``, else ``$EQUIMOL_DATA_DIR``, else the working folder.

    Raises:
        FileNotFoundError: the resolved path does not exist (the message says where it was looked for).
    """
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


def as_list(spec: PathSpec) -> list[str | Path]:
    """A path spec (one path, a list, or None) as a list."""
    if spec is None:
        return []
    return [spec] if isinstance(spec, str | Path) else list(spec)


@dataclass
class DataConfig:
    """Options of :class:`~equimol.datasets.datamodule.AtomsDataModule` (the ``data:`` section).

    Attributes:
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
        config_type_key: the ``atoms.info`` key that names a frame's type (MACE's ``config_type``).
        isolated_atom_type: one-atom frames of this type (MACE's ``IsolatedAtom``) in the data files are
            not trained on: their energies become the per-element references (E0s), when
            ``element_references`` is not given; ``None`` reads them as ordinary frames.
        config_type_weights: ``{type: weight}`` multiplying each structure's energy, force and stress
            loss terms by its type's weight (MACE's ``config_type_weights``; ``Default`` sets the
            weight of unlisted types, else 1).
    """

    train: PathSpec = None
    val: PathSpec = None
    test: PathSpec = None
    data_dir: str | None = None
    radial_cutoff: float = 5.0
    dtype: str | torch.dtype = "float64"
    energy_key: str = "energy"
    forces_key: str | None = "forces"
    stress_key: str | None = "stress"
    energy_target: str = "total"
    element_references: str | Mapping | None = None
    system_references: str | Mapping | None = None
    forces_on: str = "all"
    val_fraction: float = 0.0
    test_fraction: float = 0.0
    seed: int = 0
    batch_size: int = 5
    eval_batch_size: int | None = None
    max_edges: int | None = None
    max_structures_per_batch: int | None = None
    num_workers: int = 0
    pin_memory: bool = False
    cache_dir: str | None = None
    statistics_sample: int | None = 2000
    min_distance: float | None = 0.5
    config_type_key: str = "config_type"
    isolated_atom_type: str | None = "IsolatedAtom"
    config_type_weights: dict[str, float] | None = None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DataConfig:
        """Build from a ``data:`` mapping; an unknown key raises a TypeError naming it and the valid keys."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise TypeError(f"unknown data key(s) {unknown}; valid keys: {sorted(valid)}")
        return cls(**values)

    def validate(self) -> None:
        """Check the values (no file is read); a ValueError names the key."""
        if self.energy_target not in ("total", "adsorption"):
            raise ValueError(f"energy_target must be 'total' or 'adsorption', got {self.energy_target!r}")
        if self.forces_on not in ("all", "free"):
            raise ValueError(f"forces_on must be 'all' or 'free', got {self.forces_on!r}")
        val, test = self.val_fraction, self.test_fraction
        if not 0.0 <= val < 1.0 or not 0.0 <= test < 1.0 or val + test >= 1.0:
            raise ValueError(f"val_fraction={val}, test_fraction={test}: each in [0, 1), sum < 1")
        for name, value, least in (
            ("batch_size", self.batch_size, 1),
            ("eval_batch_size", self.eval_batch_size, 1),
            ("max_edges", self.max_edges, 1),
            ("max_structures_per_batch", self.max_structures_per_batch, 1),
            ("num_workers", self.num_workers, 0),
            ("min_distance", self.min_distance, 0),
            ("seed", self.seed, 0),
        ):
            if value is not None and not value >= least:
                raise ValueError(f"{name} must be >= {least}, got {value}")
        if self.statistics_sample is not None and self.statistics_sample < 2:
            raise ValueError(f"statistics_sample must be >= 2 structures or null (all), got {self.statistics_sample}")
        weights = self.config_type_weights
        if weights is not None and (
            not isinstance(weights, Mapping)
            or not all(isinstance(w, int | float) and not isinstance(w, bool) and w >= 0 for w in weights.values())
        ):
            raise ValueError(f"config_type_weights must map config types to numbers >= 0, got {weights!r}")
        if not self.radial_cutoff > 0:
            raise ValueError(f"radial_cutoff must be > 0 Å, got {self.radial_cutoff}")
        if not as_list(self.train):
            raise ValueError("train: at least one training data path is required")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
