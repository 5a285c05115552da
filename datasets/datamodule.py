"""Lightning DataModules: one general :class:`AtomsDataModule` and thin presets for 3BPA, OC20 and OC22.

The constructor takes a :class:`~equimol.datasets.config.DataConfig`, whose fields are the keys of
a YAML ``data:`` section, one to one (``AtomsDataModule(**data)``, or ``AtomsDataModule.from_config(data)``
with a message listing the valid keys on a typo). Relative paths (data files and reference files)
are resolved under ``data_dir``, else under ``$EQUIMOL_DATA_DIR``, else the working folder
(:func:`~equimol.datasets.config.resolve_data_path`).

Splits: ``val``/``test`` files when given, else ``val_fraction``/``test_fraction`` of the training
files, drawn by a ``numpy.random.default_rng(seed)`` permutation (the same seed gives the same
split on every machine). Batches hold ``batch_size`` structures, or, with ``max_edges``, as many
structures as fit in that many edges (``batch_size`` then caps the count only if
``max_structures_per_batch`` is set). The model's statistics (:mod:`equimol.datasets.statistics`)
come from the training split and are cached.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import Subset

from equimol.config_fields import check_section
from equimol.errors import EquimolInputError
from equimol.utils.dtype import resolve_dtype

from .atoms_dataset import AtomsDataset, LabelSettings, reference_energy, split_isolated_atoms
from .config import DataConfig, PathSpec, as_list, resolve_data_path
from .loader import GraphLoader as DataLoader
from .readers import LabelKeys
from .references import ElementReferences, SystemReferences, load_element_references
from .samplers import EdgeBudgetBatchSampler, StructureBatchSampler
from .statistics import DatasetStatistics, cached_statistics, sample_positions


class AtomsDataModule(L.LightningDataModule):
    """Graphs from ASE files, OC20 raw S2EF pairs and OC20/OC22 LMDBs (see the module docstring).

    Args:
        config: a :class:`~equimol.datasets.config.DataConfig`, or its fields as keyword arguments
            (``AtomsDataModule(train=..., batch_size=...)``); checked by ``DataConfig.validate``.
    """

    def __init__(self, config: DataConfig | None = None, /, **options: Any) -> None:
        super().__init__()
        if config is not None and options:
            raise TypeError("AtomsDataModule takes a DataConfig or keyword options, not both")
        config = config if config is not None else DataConfig.from_dict(options)
        config.validate()
        self.config = config
        self.save_hyperparameters(config.as_dict())  # recorded in Lightning checkpoints
        self.data_dir = config.data_dir
        self.dtype = resolve_dtype(config.dtype)
        forces_key = config.forces_key
        self.keys = LabelKeys(
            config.energy_key,
            forces_key,
            config.stress_key,
            require_forces=forces_key is not None,
            config_type_key=config.config_type_key,
            isolated_atom_type=config.isolated_atom_type,
            forces_hint="data.forces_key=null",
        )
        self.batch_size, self.eval_batch_size = config.batch_size, config.eval_batch_size or config.batch_size
        self.max_edges, self.max_structures_per_batch = config.max_edges, config.max_structures_per_batch
        self.num_workers, self.pin_memory = config.num_workers, config.pin_memory
        self.seed, self.cache_dir = config.seed, config.cache_dir
        self.datasets: dict[str, AtomsDataset | None] = {}
        self.indices: dict[str, np.ndarray] = {}
        self._statistics: dict[str, DatasetStatistics] = {}
        # the model's physical terms (ZBL, D3): taken off the labels before statistics and fitted E0s
        self.physical = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AtomsDataModule:
        """Build from a ``data:`` mapping (the fields of :class:`~equimol.datasets.config.DataConfig`);
        an unknown key or a bad value raises a ConfigError naming it."""
        check_section(DataConfig, config, "data")  # names unknown keys before a preset merges its defaults
        return cls(**config)

    def _paths(self, spec: PathSpec) -> list[Path]:
        return [resolve_data_path(p, self.data_dir) for p in as_list(spec)]

    def _reference_spec(self, spec: Any) -> Any:
        if isinstance(spec, str | Path) and str(spec) != "fit":
            return resolve_data_path(spec, self.data_dir)
        return spec

    def setup(self, stage: str | None = None) -> None:
        """Open the data files (lazily for LMDB), split them and resolve the references; idempotent."""
        if self.datasets:
            return
        config = self.config
        system = SystemReferences.load(self._reference_spec(config.system_references))
        element_spec = config.element_references
        settings = LabelSettings(
            radial_cutoff=float(config.radial_cutoff),
            dtype=self.dtype,
            energy_target=config.energy_target,
            element_references=None
            if element_spec == "fit"
            else load_element_references(self._reference_spec(element_spec), config.energy_key),
            system_references=system,
            forces_on=config.forces_on,
            min_distance=config.min_distance,
            config_type_weights=config.config_type_weights,
        )
        train = AtomsDataset(self._paths(config.train), settings, self.keys)
        kept, isolated = split_isolated_atoms(train, config.isolated_atom_type)
        if isolated:
            if element_spec is not None:
                raise EquimolInputError(
                    f"data.element_references={element_spec!r} is given, and the training data hold {len(isolated)} "
                    f"isolated-atom frames ({config.config_type_key}={config.isolated_atom_type}), which give the "
                    "E0s too: remove one of them (or set data.isolated_atom_type=null to train on those frames)"
                )
            records = [(train.where(i), train.record(i)) for i in isolated]
            references = ElementReferences.from_records(records, f"isolated atoms of {train.paths[0]}")
            settings = LabelSettings(**{**settings.__dict__, "element_references": references})
            train.settings = settings
        order = kept[np.random.default_rng(self.seed).permutation(len(kept))]
        n_val = int(round(config.val_fraction * len(order))) if config.val is None else 0
        n_test = int(round(config.test_fraction * len(order))) if config.test is None else 0
        for split, count in (("val", n_val), ("test", n_test)):
            fraction = getattr(config, f"{split}_fraction")
            if getattr(config, split) is None and fraction > 0 and count == 0:
                raise EquimolInputError(
                    f"{split}_fraction={fraction} of {len(order)} training structures rounds to 0 structures; "
                    f"raise data.{split}_fraction to at least {0.5 / len(order):.2g} or give data.{split} files"
                )
        self.indices["train"] = np.sort(order[n_val + n_test :])
        if len(self.indices["train"]) == 0:
            raise EquimolInputError(f"no training structures left after the split (of {len(order)})")
        if element_spec == "fit":
            settings = self._fit_references(train, settings)
        self.datasets["train"] = train
        for split, count, start in (("val", n_val, 0), ("test", n_test, n_val)):
            if getattr(config, split) is not None:
                dataset = AtomsDataset(self._paths(getattr(config, split)), settings, self.keys)
                self.datasets[split], self.indices[split] = (
                    dataset,
                    split_isolated_atoms(dataset, config.isolated_atom_type)[0],
                )
            elif count:
                self.datasets[split], self.indices[split] = train, np.sort(order[start : start + count])
            else:
                self.datasets[split] = None

    def use_physical_terms(self, physical) -> None:
        """Statistics and fitted E0s on the labels minus ``physical`` (an
        :class:`equimol.models.physical.PhysicalTerms` in float64, or None); call before :meth:`setup`."""
        if self.datasets:
            raise RuntimeError("use_physical_terms must be called before setup()")
        self.physical = physical

    def _fit_references(self, train: AtomsDataset, settings: LabelSettings) -> LabelSettings:
        numbers, energies = [], []
        no_elements = LabelSettings(**{**settings.__dict__, "element_references": None})
        # on the statistics sample: a least-squares fit of a few coefficients needs no full pass over the data
        split = self.indices["train"]
        for index in split[sample_positions(len(split), self.config.statistics_sample, self.seed)]:
            record = train.record(int(index))
            numbers.append(record.atomic_numbers.numpy())
            energy = record.energy - reference_energy(record, no_elements, train.where(int(index)))
            if self.physical is not None:
                pbc, cell = record.pbc.reshape(3).numpy(), record.cell.reshape(3, 3).numpy()
                energy -= self.physical.energy_and_forces(record.pos.numpy(), numbers[-1], cell, pbc)[0]
            energies.append(energy)
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
            raise EquimolInputError(f"split {split!r} has no data")
        if split not in self._statistics:
            self._statistics[split] = cached_statistics(
                self.datasets[split],
                self.indices[split],
                self.cache_dir,
                sample_size=self.config.statistics_sample,
                seed=self.seed,
                physical=self.physical,
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
            raise EquimolInputError(f"no {split} data: give {split}= files or a {split}_fraction")
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
