"""The sections of a training config besides ``model``: ``data``, ``loss``, ``optimizer``, ``scheduler``,
``trainer`` and ``finetune``, one dataclass each, every key declared once with its meaning and limits.

Each class maps one to one onto the arguments of what it configures (:class:`DataConfig` onto
:class:`~equimol.datasets.datamodule.AtomsDataModule`, the others onto :mod:`equimol.train`). The
checks are the fields' metadata (:func:`equimol.config_fields.option`) plus, where two keys depend on
each other, the class's ``check_relations``; :func:`equimol.config_fields.build_section` runs both.
The classes live in the core so that the configuration reference
(:func:`equimol.config_schema.describe`) needs neither ``equimol.datasets`` nor ``equimol.train``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from equimol.config_fields import build_section, check_section, option
from equimol.errors import ConfigError
from equimol.models.config import DEFAULT_RADIAL_CUTOFF

PathSpec = str | Path | Sequence[str | Path] | None
LOGGERS = ("csv", "tensorboard", "wandb")
SEED_LIMIT = 2**32  # numpy's seed range


def _fail(key: str, expected: str, value) -> None:
    raise ConfigError(f"{key} must be {expected}, got {value!r}")


@dataclass
class DataConfig:
    """Options of :class:`~equimol.datasets.datamodule.AtomsDataModule` (the ``data:`` section)."""

    train: PathSpec = option(None, "training data: a path or a list (*.lmdb, *.extxyz[.xz] + .txt, any ASE file)")
    val: PathSpec = option(None, "validation data paths (null: split off val_fraction of train)")
    test: PathSpec = option(None, "test data paths (null: split off test_fraction of train)")
    data_dir: str | None = option(None, "root of relative data paths (null: $EQUIMOL_DATA_DIR)")
    radial_cutoff: float = option(
        DEFAULT_RADIAL_CUTOFF, "graph cutoff, Å; a training config sets it from model.radial_cutoff", gt=0
    )
    dtype: str | torch.dtype = option("float64", "dtype of positions and labels (set by trainer.precision)")
    energy_key: str = option("energy", "name of the energy label in the files")
    forces_key: str | None = option("forces", "name of the forces label (null: no forces)")
    stress_key: str | None = option("stress", "name of the stress label (null: no stress)")
    energy_target: str = option(
        "total", "total (stored energies) or adsorption (minus per-system references)", choices=("total", "adsorption")
    )
    element_references: str | Mapping | None = option(
        None, "per-element energies: null, fit, {element: eV}, an .npz with coeff[Z], or an isolated-atoms file"
    )
    system_references: str | Mapping | None = option(
        None, "adsorption: per-system references (null: frames' reference_energy, a dict, or a .pkl/.json file)"
    )
    forces_on: str = option(
        "all", "all, or free: fixed atoms' forces are left out of the loss", choices=("all", "free")
    )
    val_fraction: float = option(0.0, "fraction of the training files split off as validation data", ge=0, lt=1)
    test_fraction: float = option(0.0, "fraction of the training files split off as test data", ge=0, lt=1)
    seed: int = option(0, "seed of the split and the shuffle", ge=0)
    batch_size: int = option(5, "structures per training batch", ge=1)
    eval_batch_size: int | None = option(None, "structures per val/test batch (null: batch_size)", ge=1)
    max_edges: int | None = option(None, "bound on edges per batch instead of a structure count", ge=1)
    max_structures_per_batch: int | None = option(None, "cap on structures in an edge-bounded batch", ge=1)
    num_workers: int = option(0, "DataLoader worker processes", ge=0)
    pin_memory: bool = option(False, "pin batches in page-locked memory")
    cache_dir: str | None = option(None, "where statistics are cached (null: <cache root>/dataset_statistics)")
    statistics_sample: int | None = option(
        2000, "statistics from a seeded sample of this many structures of a split (null: all)", ge=2
    )
    min_distance: float | None = option(
        0.5, "Å: a frame with two atoms closer than this is an error (null: any distance)", ge=0
    )
    config_type_key: str = option("config_type", "the atoms.info key naming a frame's type (MACE's config_type)")
    isolated_atom_type: str | None = option(
        "IsolatedAtom", "one-atom frames of this type give the E0s and are not trained on (null: ordinary frames)"
    )
    config_type_weights: dict[str, float] | None = option(
        None, "{type: weight} multiplying each structure's loss terms (Default: unlisted types)", ge=0
    )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DataConfig:
        """Build from a ``data:`` mapping, checked (:func:`equimol.config_fields.build_section`)."""
        return build_section(cls, values, "data")

    def validate(self) -> None:
        """Check the values (no file is read); a ConfigError names ``data.<key>``."""
        check_section(type(self), self.as_dict(), "data")
        self.check_relations()

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def check_relations(self) -> None:
        """The two split fractions together, and at least one training path."""
        if self.val_fraction + self.test_fraction >= 1.0:
            _fail("data.val_fraction + data.test_fraction", "< 1", self.val_fraction + self.test_fraction)
        if not self.train:
            raise ConfigError("data.train: at least one training data path is required")


@dataclass
class StageTwoConfig:
    """``loss.stage_two`` (MACE's ``--swa`` stage, :mod:`equimol.train.stage_two`)."""

    start: float = option(0.8, "fraction of the training budget after which stage two starts", gt=0, lt=1)
    energy_weight: float = option(1000.0, "energy weight in stage two", ge=0)
    forces_weight: float = option(100.0, "forces weight in stage two", ge=0)
    stress_weight: float = option(0.0, "stress weight in stage two", ge=0)
    lr: float | None = option(0.001, "constant learning rate of stage two (null: keep the scheduler's)", gt=0)

    def check_relations(self) -> None:
        if self.energy_weight + self.forces_weight + self.stress_weight <= 0:
            _fail(
                "loss.stage_two.*_weight", "not all zero", (self.energy_weight, self.forces_weight, self.stress_weight)
            )


@dataclass
class LossConfig:
    """Weights of the loss terms, ``mse`` or ``huber`` (:mod:`equimol.train.losses`), an optional stage two."""

    energy_weight: float = option(1.0, "weight of the per-atom energy term", ge=0)
    forces_weight: float = option(100.0, "weight of the forces term", ge=0)
    stress_weight: float = option(0.0, "weight of the stress term", ge=0)
    kind: str = option("mse", "mse or huber", choices=("mse", "huber"))
    huber_delta: float = option(0.01, "Huber threshold, eV/atom, eV/Å, eV/Å^3 (MACE's default)", gt=0)
    stage_two: dict | None = option(
        None, "MACE's second stage: other weights and lr from a fraction of the budget on", schema=StageTwoConfig
    )

    def check_relations(self) -> None:
        if self.energy_weight + self.forces_weight + self.stress_weight <= 0:
            _fail("loss.*_weight", "not all zero", (self.energy_weight, self.forces_weight, self.stress_weight))


@dataclass
class OptimizerConfig:
    """``adam`` (``amsgrad`` on by default, as in MACE) or ``adamw``; EMA of the weights with ``ema_decay``."""

    name: str = option("adam", "adam or adamw", choices=("adam", "adamw"))
    lr: float = option(0.01, "learning rate", gt=0)
    weight_decay: float = option(0.0, "weight decay (L2 for adam, decoupled for adamw)", ge=0)
    amsgrad: bool = option(True, "use the AMSGrad variant")
    ema_decay: float | None = option(
        0.99, "decay of the exponential moving average of the weights (null: off)", gt=0, lt=1
    )


@dataclass
class SchedulerConfig:
    """``plateau``: ReduceLROnPlateau on the validation loss; ``cosine``: linear warm-up then cosine decay
    over ``cosine_epochs``; ``budget_cosine``: cosine decay to ``min_lr`` over whichever training budget
    runs out first, after holding the peak rate for ``decay_start`` of it, every step
    (:mod:`equimol.train.budget_schedule`)."""

    name: str = option("plateau", "learning-rate schedule", choices=("plateau", "cosine", "budget_cosine", "none"))
    factor: float = option(0.8, "plateau: factor applied to the learning rate", gt=0, lt=1)
    patience: int = option(50, "plateau: epochs without improvement before the rate drops", ge=0)
    min_lr: float = option(0.0, "lowest learning rate", ge=0)
    decay_start: float = option(
        0.0, "budget_cosine: fraction of the budget at the peak rate before the decay begins", ge=0, lt=1
    )
    warmup_epochs: int = option(0, "cosine: epochs of linear warm-up", ge=0)
    cosine_epochs: int | None = option(None, "cosine: length of the decay in epochs (null: trainer.max_epochs)", ge=1)


@dataclass
class TrainerConfig:
    """Everything the Lightning ``Trainer`` and the run folder need (see :mod:`equimol.train.run`)."""

    run_dir: str = option("runs/equimol", "run folder (relative: to the working folder)")
    max_epochs: int = option(100, "epoch budget", ge=1)
    max_steps: int = option(-1, "step budget (-1: none)", ge=-1)
    max_time: str | float | None = option(None, "wall-time budget, 'DD:HH:MM:SS' or seconds")
    max_cpu_time: float | None = option(None, "CPU-seconds budget of this process (load-independent)", gt=0)
    snapshot_cpu_times: list[float] = option(
        default_factory=list, doc="write EMA model files at these CPU seconds", gt=0
    )
    precision: int = option(64, "float precision of model and data, bits", choices=(32, 64))
    seed: int = option(0, "seed of the training run", ge=0, lt=SEED_LIMIT)
    accelerator: str = option("cpu", "Lightning accelerator", choices=("cpu", "gpu", "cuda", "auto"))
    devices: int | str = option(1, "devices (processes) per machine")
    num_nodes: int = option(1, "machines; each runs `devices` processes (torchrun / SLURM)", ge=1)
    strategy: str = option("auto", "Lightning strategy (e.g. ddp)")
    num_threads: int | None = option(None, "torch threads per process (null: torch's default)", ge=1)
    compile_step: bool = option(
        False, "train through one traced and compiled energy-and-forces graph", renamed_from=("compile",)
    )
    retain_freed_memory: bool = option(True, "glibc keeps freed memory: fewer page faults (equimol/utils/allocator.py)")
    gradient_clip_val: float | None = option(10.0, "gradient-norm clip (null: none)", gt=0)
    early_stopping_patience: int | None = option(None, "validations without improvement before stopping", ge=1)
    checkpoint_every_n_steps: int | None = option(None, "also write last.ckpt every n steps", ge=1)
    log_every_n_steps: int = option(10, "steps between training-metric logs", ge=1)
    check_val_every_n_epoch: int = option(1, "epochs between validations", ge=1)
    progress_bar: bool = option(True, "show Lightning's progress bar")
    test_after_fit: bool = option(True, "evaluate the best model on the test data after training")
    committee_seeds: list[int] | None = option(
        None, "train one member per seed in run_dir/member_<seed> (null: one model)", ge=0, lt=SEED_LIMIT
    )
    logger: list[str] = option(
        default_factory=lambda: ["csv", "tensorboard"], doc="loggers, any of csv, tensorboard, wandb", choices=None
    )
    wandb_project: str = option("equimol", "Weights & Biases project of the wandb logger")

    def check_relations(self) -> None:
        if isinstance(self.max_time, str):
            parts = self.max_time.split(":")
            if len(parts) != 4 or not all(p.isdigit() for p in parts):
                _fail("trainer.max_time", "'DD:HH:MM:SS' or seconds", self.max_time)
        if any(name not in LOGGERS for name in self.logger) or len(set(self.logger)) != len(self.logger):
            _fail("trainer.logger", f"a list of distinct loggers of {list(LOGGERS)}", self.logger)
        if "wandb" in self.logger and importlib.util.find_spec("wandb") is None:
            raise ConfigError("trainer.logger: wandb needs the wandb package: pip install 'equimol[wandb]'")
        seeds = self.committee_seeds
        if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
            _fail("trainer.committee_seeds", "a non-empty list of distinct ints in [0, 2**32) or null", seeds)


@dataclass
class FinetuneConfig:
    """Fine-tuning from ``model.init_from`` (see :mod:`equimol.train.finetune`)."""

    freeze: list[str] = option(
        default_factory=list, doc="parameter-name prefixes kept fixed, e.g. [embedding, interactions.0]"
    )
    pretrained_lr_factor: float = option(1.0, "learning-rate factor of the parameters taken from the model file", ge=0)


@dataclass
class ModelTrainingKeys:
    """Keys of the ``model:`` section that belong to training, not to the potential's constructor."""

    init_from: str | None = option(
        None, "model file whose weights (and hyperparameters not given) the training starts from"
    )
