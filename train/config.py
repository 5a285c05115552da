"""The training configuration: one YAML file, six sections, validated before anything runs.

.. code-block:: yaml

    model:     {...}   # equimol.models.ModelConfig (build_model); some keys may be "auto" (AUTO_MODEL_KEYS)
    data:      {...}   # equimol.datasets.config.DataConfig (AtomsDataModule); its radial_cutoff is model.radial_cutoff
    loss:      {...}   # LossConfig: energy (per atom), forces and stress weights, mse | huber, stage two
    optimizer: {...}   # OptimizerConfig: adam (amsgrad) | adamw, learning rate, EMA decay
    scheduler: {...}   # SchedulerConfig: plateau | cosine (with warm-up) | none
    trainer:   {...}   # TrainerConfig: epochs, time budget, precision, seed, devices, checkpoints, logs

Each section maps one to one onto constructor arguments. :func:`load_config` checks every key
(unknown key, wrong type, missing data file) *before* any data are read or a model is built, and
each error names the key (``data.trian``, ``optimizer.lr``). Command-line overrides are dotted
``section.key=value`` pairs whose value is parsed as YAML (``trainer.max_epochs=3``,
``model.spe.enabled=true``, ``data.train=[a.xyz,b.xyz]``).

**Paths.** A relative ``data.data_dir`` written in a YAML file is resolved against the folder of
that file (the shipped configs say ``../../shared/data``: the repository sits next to ``shared/``);
one given as an override is resolved against the working folder. ``data_dir: null`` falls back to
``$EQUIMOL_DATA_DIR``. A relative ``trainer.run_dir`` is taken from the working folder.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .schema import ConfigError, check_section
from .stage_two import stage_two_config

SECTIONS = ("model", "data", "loss", "optimizer", "scheduler", "trainer", "finetune")
AUTO = "auto"
# model keys that may be "auto": filled in from the training split's statistics (equimol.datasets.statistics)
AUTO_MODEL_KEYS = ("avg_num_neighbors", "energy_shift", "energy_scale", "e0s")
# values that stand in for "auto" where a model config is checked or its weight-free parts are built before the data
AUTO_STAND_INS = {"avg_num_neighbors": 1.0, "energy_shift": 0.0, "energy_scale": 1.0, "e0s": None}


@dataclass
class LossConfig:
    """Weights of the loss terms, ``mse`` or ``huber`` (see :mod:`equimol.train.losses`), and an optional stage two.

    ``stage_two`` (MACE's ``--swa`` stage): a mapping of :class:`equimol.train.stage_two.StageTwoConfig`;
    from ``start`` (a fraction of the training budget) on, the term weights and the learning rate change.
    """

    energy_weight: float = 1.0
    forces_weight: float = 100.0
    stress_weight: float = 0.0
    kind: str = "mse"
    huber_delta: float = 0.01  # eV/atom, eV/Å, eV/Å^3 (MACE's default)
    stage_two: dict | None = None


@dataclass
class OptimizerConfig:
    """``adam`` (``amsgrad`` on by default, as in MACE) or ``adamw``; EMA of the weights with ``ema_decay``."""

    name: str = "adam"
    lr: float = 0.01
    weight_decay: float = 0.0
    amsgrad: bool = True
    ema_decay: float | None = 0.99


@dataclass
class SchedulerConfig:
    """``plateau``: ReduceLROnPlateau on the validation loss; ``cosine``: linear warm-up then cosine decay
    over ``cosine_epochs``; ``budget_cosine``: cosine decay to ``min_lr`` over whichever training budget
    runs out first, every step (:mod:`equimol.train.budget_schedule`)."""

    name: str = "plateau"
    factor: float = 0.8
    patience: int = 50
    min_lr: float = 0.0
    warmup_epochs: int = 0
    cosine_epochs: int | None = None  # default: trainer.max_epochs


@dataclass
class TrainerConfig:
    """Everything the Lightning ``Trainer`` and the run folder need (see :mod:`equimol.train.run`)."""

    run_dir: str = "runs/equimol"
    max_epochs: int = 100
    max_steps: int = -1
    max_time: str | float | None = None  # "DD:HH:MM:SS" or seconds
    max_cpu_time: float | None = None  # CPU seconds of this process (load-independent budget, train/cpu_budget.py)
    snapshot_cpu_times: list[float] = field(default_factory=list)  # EMA model files at these CPU seconds
    precision: int = 64
    seed: int = 0
    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1  # machines; each runs `devices` processes (torchrun / SLURM, see the README)
    strategy: str = "auto"
    num_threads: int | None = None
    compile: bool = False  # train through one compiled energy-and-forces graph (train/compiled_forces.py)
    retain_freed_memory: bool = True  # glibc keeps freed memory: fewer page faults (equimol/utils/allocator.py)
    gradient_clip_val: float | None = 10.0
    early_stopping_patience: int | None = None
    checkpoint_every_n_steps: int | None = None
    log_every_n_steps: int = 10
    check_val_every_n_epoch: int = 1
    progress_bar: bool = True
    test_after_fit: bool = True
    committee_seeds: list[int] | None = None  # train one member per seed in run_dir/member_<seed> (train/committee.py)
    logger: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])  # any of LOGGERS
    wandb_project: str = "equimol"  # Weights & Biases project of logger wandb (WANDB_MODE=offline: no account)


@dataclass
class FinetuneConfig:
    """Fine-tuning from ``model.init_from`` (see :mod:`equimol.train.finetune`)."""

    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes, e.g. [embedding, interactions.0]
    pretrained_lr_factor: float = 1.0  # learning-rate factor for the parameters taken from the model file


LOGGERS = ("csv", "tensorboard", "wandb")
SECTION_CLASSES = {
    "loss": LossConfig,
    "optimizer": OptimizerConfig,
    "scheduler": SchedulerConfig,
    "trainer": TrainerConfig,
    "finetune": FinetuneConfig,
}
CHOICES = {
    "loss.kind": ("mse", "huber"),
    "optimizer.name": ("adam", "adamw"),
    "scheduler.name": ("plateau", "cosine", "budget_cosine", "none"),
    "trainer.precision": (32, 64),
    "trainer.accelerator": ("cpu", "gpu", "cuda", "auto"),
}


@dataclass
class TrainingConfig:
    """A validated configuration; ``as_dict()`` is what checkpoints store."""

    model: dict
    data: dict
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def as_dict(self) -> dict:
        return {
            "model": copy.deepcopy(self.model),
            "data": copy.deepcopy(self.data),
            **{name: dataclasses.asdict(getattr(self, name)) for name in SECTION_CLASSES},
        }


def _data_hints() -> dict[str, Any]:
    from equimol.datasets.config import DataConfig

    return typing.get_type_hints(DataConfig)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"trainer.max_epochs=3"`` -> ``(["trainer", "max_epochs"], 3)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {text!r}: the key must be dotted, section.key (sections: {list(SECTIONS)})")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({error})") from error
    return parts, value


def apply_overrides(config: dict, overrides: Sequence[str]) -> dict:
    """A copy of ``config`` with dotted ``section.key=value`` overrides applied (unknown sections rejected)."""
    config = copy.deepcopy(config)
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] not in SECTIONS:
            raise ConfigError(f"override {text!r}: unknown section {parts[0]!r}; sections: {list(SECTIONS)}")
        node = config.setdefault(parts[0], {})
        for part in parts[1:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a mapping")
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return config


def _validate_model(model: dict) -> None:
    from equimol.models.config import ModelConfig

    if not isinstance(model, Mapping):
        raise ConfigError(f"section 'model' must be a mapping, got {type(model).__name__}")
    probe = dict(model)
    probe.pop("init_from", None)  # fine-tuning: handled by _merge_init_from and the training module
    # "auto" values are filled from the data later; validate every other key now with stand-ins.
    for key in AUTO_MODEL_KEYS:
        if probe.get(key) == AUTO:
            probe[key] = AUTO_STAND_INS[key]
    if model.get("avg_num_neighbors") is None:
        raise ConfigError("model.avg_num_neighbors is required: a positive number or 'auto' (from the training data)")
    try:
        ModelConfig.from_dict(probe)  # checks tp_backend against the TP registry, too
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model: {error}") from error


def _merge_init_from(model: Any, finetune: FinetuneConfig) -> Any:
    """Complete the model section from ``model.init_from`` (:func:`equimol.train.finetune.merge_pretrained_config`)."""
    if not isinstance(model, Mapping) or model.get("init_from") is None:
        if finetune.freeze or finetune.pretrained_lr_factor != 1.0:
            raise ConfigError("finetune.freeze and finetune.pretrained_lr_factor need model.init_from (a model file)")
        return model
    from .finetune import FinetuneError, merge_pretrained_config

    if not isinstance(model["init_from"], str):
        raise ConfigError(f"model.init_from must be a model file path, got {model['init_from']!r}")
    try:
        return merge_pretrained_config(model)
    except FinetuneError as error:
        raise ConfigError(str(error)) from error


def _resolve_data_dir(data: dict, base: Path | None) -> None:
    data_dir = data.get("data_dir")
    if data_dir is not None and base is not None and not Path(data_dir).expanduser().is_absolute():
        data["data_dir"] = str((base / Path(data_dir)).resolve())
    elif data_dir is not None:
        data["data_dir"] = str(Path(data_dir).expanduser().resolve())


def _check_data_files(data: dict) -> None:
    from equimol.datasets.config import resolve_data_path

    if data.get("data_dir") is not None and not Path(data["data_dir"]).is_dir():
        raise ConfigError(
            f"data.data_dir: folder {data['data_dir']!r} does not exist; point it at your copy of the data "
            "(data.data_dir=/path/to/data on the command line, or EQUIMOL_DATA_DIR with data_dir: null)"
        )
    for key in ("train", "val", "test", "element_references", "system_references"):
        spec = data.get(key)
        if spec is None or isinstance(spec, Mapping) or spec == "fit":
            continue
        for path in [spec] if isinstance(spec, (str, Path)) else spec:
            try:
                resolve_data_path(path, data.get("data_dir"))
            except FileNotFoundError as error:
                raise ConfigError(f"data.{key}: {error}") from error


def validate_config(raw: Mapping, base_dir: str | Path | None = None) -> TrainingConfig:
    """Check a configuration mapping without reading any data; every error is a :class:`ConfigError` naming the key.

    Args:
        raw: the parsed YAML (after overrides).
        base_dir: folder that a relative ``data.data_dir`` refers to (the YAML file's folder).
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"the configuration must be a mapping of sections, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; sections: {list(SECTIONS)}")
    for required in ("model", "data"):
        if raw.get(required) is None:
            raise ConfigError(f"section {required!r} is required")
    # cheapest first: these sections need no torch/e3nn/Lightning import, so their typos show at once
    sections = {}
    for name, cls in SECTION_CLASSES.items():
        values = raw.get(name) or {}
        check_section(name, values, typing.get_type_hints(cls), CHOICES)
        sections[name] = cls(**values)
    _check_ranges(sections)
    model = copy.deepcopy(dict(raw["model"])) if isinstance(raw["model"], Mapping) else raw["model"]
    model = _merge_init_from(model, sections["finetune"])
    _validate_model(model)
    data = copy.deepcopy(dict(raw["data"])) if isinstance(raw["data"], Mapping) else raw["data"]
    check_section("data", data, _data_hints(), CHOICES)
    _reconcile_precision(model, data, sections["trainer"])
    _reconcile_cutoff(model, data)
    _resolve_data_dir(data, Path(base_dir).resolve() if base_dir is not None else None)
    _check_data_values(data, sections["trainer"])
    _check_data_files(data)
    return TrainingConfig(model=model, data=data, **sections)


def _check_data_values(data: dict, trainer: TrainerConfig) -> None:
    """The data options' own checks (:meth:`DataConfig.validate`: no Lightning, no data read) and the run folder."""
    from equimol.datasets.config import DataConfig

    try:
        DataConfig(**data).validate()
    except ValueError as error:
        raise ConfigError(f"data.{error}") from error
    if data.get("val") is None and not data.get("val_fraction"):
        raise ConfigError("data: no validation data; give data.val files or a data.val_fraction > 0")
    if Path(trainer.run_dir).expanduser().is_file():
        raise ConfigError(f"trainer.run_dir={trainer.run_dir!r} is an existing file; choose a folder")


def _check_ranges(sections: dict) -> None:
    optimizer, scheduler, trainer, loss = (sections[k] for k in ("optimizer", "scheduler", "trainer", "loss"))
    checks = [
        (optimizer.lr > 0, "optimizer.lr", "> 0", optimizer.lr),
        (
            optimizer.ema_decay is None or 0 < optimizer.ema_decay < 1,
            "optimizer.ema_decay",
            "in (0, 1) or null",
            optimizer.ema_decay,
        ),
        (0 < scheduler.factor < 1, "scheduler.factor", "in (0, 1)", scheduler.factor),
        (scheduler.warmup_epochs >= 0, "scheduler.warmup_epochs", ">= 0", scheduler.warmup_epochs),
        (trainer.max_epochs >= 1, "trainer.max_epochs", ">= 1", trainer.max_epochs),
        (0 <= trainer.seed < 2**32, "trainer.seed", "in [0, 2**32) (numpy's seed range)", trainer.seed),
        (trainer.num_nodes >= 1, "trainer.num_nodes", ">= 1", trainer.num_nodes),
        (
            trainer.max_cpu_time is None or trainer.max_cpu_time > 0,
            "trainer.max_cpu_time",
            "> 0 (CPU seconds) or null",
            trainer.max_cpu_time,
        ),
        (
            min(loss.energy_weight, loss.forces_weight, loss.stress_weight) >= 0,
            "loss.*_weight",
            ">= 0",
            dataclasses.asdict(loss),
        ),
        (
            loss.energy_weight + loss.forces_weight + loss.stress_weight > 0,
            "loss.*_weight",
            "not all zero",
            dataclasses.asdict(loss),
        ),
    ]
    for ok, key, expected, value in checks:
        if not ok:
            raise ConfigError(f"{key} must be {expected}, got {value!r}")
    if loss.huber_delta <= 0:
        raise ConfigError(f"loss.huber_delta must be > 0, got {loss.huber_delta!r}")
    if loss.stage_two is not None:
        stage_two_config(loss.stage_two)
    if isinstance(trainer.max_time, str):
        parts = trainer.max_time.split(":")
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            raise ConfigError(f"trainer.max_time must be 'DD:HH:MM:SS' or seconds, got {trainer.max_time!r}")
    unknown_loggers = [name for name in trainer.logger if name not in LOGGERS]
    if unknown_loggers or len(set(trainer.logger)) != len(trainer.logger):
        raise ConfigError(f"trainer.logger must list distinct loggers of {list(LOGGERS)}, got {trainer.logger!r}")
    if "wandb" in trainer.logger and importlib.util.find_spec("wandb") is None:
        raise ConfigError("trainer.logger: wandb needs the wandb package: pip install 'equimol[wandb]'")
    if any(t <= 0 for t in trainer.snapshot_cpu_times):
        times = trainer.snapshot_cpu_times
        raise ConfigError(f"trainer.snapshot_cpu_times must hold positive CPU seconds, got {times!r}")
    seeds = trainer.committee_seeds
    if seeds is not None and (
        not seeds or len(set(seeds)) != len(seeds) or not all(0 <= seed < 2**32 for seed in seeds)
    ):
        raise ConfigError(
            f"trainer.committee_seeds must be a non-empty list of distinct ints in [0, 2**32) or null, got {seeds!r}"
        )
    if sections["finetune"].pretrained_lr_factor < 0:
        raise ConfigError(
            f"finetune.pretrained_lr_factor must be >= 0, got {sections['finetune'].pretrained_lr_factor!r}"
        )


def _reconcile_precision(model: dict, data: dict, trainer: TrainerConfig) -> None:
    """``trainer.precision`` sets the model's and the data's dtype; an explicit contradiction is an error."""
    wanted = f"float{trainer.precision}"
    for section, values in (("model", model), ("data", data)):
        given = values.get("dtype")
        if given is not None and str(given).removeprefix("torch.") != wanted:
            raise ConfigError(
                f"{section}.dtype={given!r} contradicts trainer.precision={trainer.precision}; "
                "set trainer.precision only (it sets both dtypes)"
            )
        values["dtype"] = wanted


def _reconcile_cutoff(model: dict, data: dict) -> None:
    """The graphs are built at the model's ``radial_cutoff``: ``data.radial_cutoff`` is derived from it.

    Giving ``data.radial_cutoff`` is allowed only when it equals the model's (older configs say both);
    a different value is an error naming both keys, since a model evaluated at one cutoff and
    trained on graphs of another is silently wrong.
    """
    from equimol.models.config import ModelConfig

    cutoff = float(model.get("radial_cutoff", ModelConfig.radial_cutoff))
    given = data.get("radial_cutoff")
    if given is not None and float(given) != cutoff:
        raise ConfigError(
            f"data.radial_cutoff={given} differs from model.radial_cutoff={cutoff}; the data's graphs are built at "
            "the model's cutoff: remove data.radial_cutoff (or set both to the same value)"
        )
    data["radial_cutoff"] = cutoff


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainingConfig:
    """Read a YAML file, apply ``section.key=value`` overrides and validate (see :func:`validate_config`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of sections")
    # a data_dir given on the command line is relative to the working folder, one in the file to the file
    override_keys = {tuple(parse_override(text)[0]) for text in overrides}
    raw = apply_overrides(raw, overrides)
    if ("data", "data_dir") in override_keys and raw["data"].get("data_dir") is not None:
        raw["data"]["data_dir"] = str(Path(raw["data"]["data_dir"]).expanduser().resolve())
    return validate_config(raw, base_dir=path.parent)
