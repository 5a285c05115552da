"""The training configuration: one YAML file, seven sections, validated before anything runs.

.. code-block:: yaml

    model:     {...}   # equimol.models.ModelConfig (build_model); some keys may be "auto" (AUTO_MODEL_KEYS),
                       # plus init_from (fine-tuning: equimol.config_sections.ModelTrainingKeys)
    data:      {...}   # equimol.datasets.config.DataConfig (AtomsDataModule); its radial_cutoff is model.radial_cutoff
    loss:      {...}   # LossConfig: energy (per atom), forces and stress weights, mse | huber, stage two
    optimizer: {...}   # OptimizerConfig: adam (amsgrad) | adamw, learning rate, EMA decay
    scheduler: {...}   # SchedulerConfig: plateau | cosine (with warm-up) | none
    trainer:   {...}   # TrainerConfig: epochs, time budget, precision, seed, devices, checkpoints, logs
    finetune:  {...}   # FinetuneConfig: frozen parameters, learning-rate factor (with model.init_from)

Each section maps one to one onto constructor arguments; the classes and every key's meaning, type,
default and limits are in :mod:`equimol.config_sections` and :mod:`equimol.models.config`, listed by
:func:`equimol.config_schema.describe`. :func:`load_config` checks every key with the one validator
(:func:`equimol.config_fields.build_section`: unknown key, wrong type, value out of range, missing
data file, ``model.tp_options`` against the backend's constructor) *before* any data are read or a
model is built, and each error is a :class:`~equimol.errors.ConfigError` naming the key
(``data.trian``, ``optimizer.lr``) and the file. Command-line overrides are dotted
``section.key=value`` pairs whose value is parsed as YAML (``trainer.max_epochs=3``,
``model.spe.enabled=true``, ``data.train=[a.xyz,b.xyz]``).

**The model section** is held as a :class:`~equimol.models.config.ModelConfig` (``TrainingConfig.model``);
its ``auto`` keys stay ``"auto"`` until training resolves them from the training split's statistics
(:meth:`~equimol.models.config.ModelConfig.resolve_auto`, called once by :mod:`equimol.train.run`).
``model.init_from`` is a training key, not a potential's: it is ``TrainingConfig.init_from``, and
:meth:`TrainingConfig.as_dict` writes it back under ``model`` (``config.yaml``, checkpoints).

**Paths.** A relative ``data.data_dir`` written in a YAML file is resolved against the folder of
that file (the shipped configs say ``../../shared/data``: the repository sits next to ``shared/``);
one given as an override is resolved against the working folder. ``data_dir: null`` falls back to
``$EQUIMOL_DATA_DIR``. A relative ``trainer.run_dir`` is taken from the working folder.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from equimol.config_fields import AUTO, build_section
from equimol.config_schema import SECTION_CLASSES, SECTIONS
from equimol.config_sections import (
    LOGGERS,
    DataConfig,
    FinetuneConfig,
    LossConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainerConfig,
)
from equimol.errors import ConfigError
from equimol.models.config import ModelConfig

# model keys that may be "auto": filled in from the training split's statistics (equimol.datasets.statistics)
AUTO_MODEL_KEYS = ModelConfig.auto_keys()
# values that stand in for "auto" where a model's weight-free parts are built before the data
AUTO_STAND_INS = {"avg_num_neighbors": 1.0, "energy_shift": 0.0, "energy_scale": 1.0, "e0s": None}
TRAINING_SECTIONS = ("loss", "optimizer", "scheduler", "trainer", "finetune")
__all__ = [
    "AUTO",
    "AUTO_MODEL_KEYS",
    "LOGGERS",
    "SECTIONS",
    "ConfigError",
    "DataConfig",
    "FinetuneConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "TrainerConfig",
    "TrainingConfig",
    "apply_overrides",
    "load_config",
    "parse_override",
    "validate_config",
]


@dataclass
class TrainingConfig:
    """A validated configuration; ``as_dict()`` is what ``config.yaml`` and checkpoints store.

    ``model`` may hold ``"auto"`` values (:data:`AUTO_MODEL_KEYS`); ``init_from`` is ``model.init_from``.
    """

    model: ModelConfig
    data: dict
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    init_from: str | None = None

    def model_dict(self) -> dict:
        """The ``model:`` section as plain data: :meth:`ModelConfig.to_dict`, plus ``init_from`` if set."""
        model = self.model.to_dict()
        if self.init_from is not None:
            model["init_from"] = self.init_from
        return model

    def as_dict(self) -> dict:
        return {
            "model": self.model_dict(),
            "data": copy.deepcopy(self.data),
            **{name: dataclasses.asdict(getattr(self, name)) for name in TRAINING_SECTIONS},
        }


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


def _build_model(model: dict) -> ModelConfig:
    """The ``model`` section (``init_from`` taken out) as a :class:`ModelConfig`; ``auto`` keys stay ``auto``."""
    if model.get("avg_num_neighbors") is None:
        raise ConfigError("model.avg_num_neighbors is required: a positive number or 'auto' (from the training data)")
    return ModelConfig.from_dict(model)  # tp_backend against the TP registry, tp_options against its constructor


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
    sections = {name: build_section(SECTION_CLASSES[name], raw.get(name) or {}, name) for name in TRAINING_SECTIONS}
    if not isinstance(raw["model"], Mapping):
        raise ConfigError(f"section 'model' must be a mapping, got {type(raw['model']).__name__}")
    model = _merge_init_from(copy.deepcopy(dict(raw["model"])), sections["finetune"])
    init_from = model.pop("init_from", None)  # fine-tuning: the training module loads the weights
    data = copy.deepcopy(dict(raw["data"])) if isinstance(raw["data"], Mapping) else raw["data"]
    if not isinstance(data, Mapping):
        raise ConfigError(f"section 'data' must be a mapping, got {type(data).__name__}")
    _reconcile_precision(model, data, sections["trainer"])
    model_config = _build_model(model)  # one deprecation line per old spelling
    _reconcile_cutoff(model_config, data)
    _resolve_data_dir(data, Path(base_dir).resolve() if base_dir is not None else None)
    _check_data_values(data, sections["trainer"])
    _check_data_files(data)
    return TrainingConfig(model=model_config, data=data, init_from=init_from, **sections)


def _check_data_values(data: dict, trainer: TrainerConfig) -> None:
    """The data options (:class:`DataConfig`: no Lightning, no data read) and the run folder."""
    DataConfig.from_dict(data)
    if data.get("val") is None and not data.get("val_fraction"):
        raise ConfigError("data: no validation data; give data.val files or a data.val_fraction > 0")
    if Path(trainer.run_dir).expanduser().is_file():
        raise ConfigError(f"trainer.run_dir={trainer.run_dir!r} is an existing file; choose a folder")


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


def _reconcile_cutoff(model: ModelConfig, data: dict) -> None:
    """The graphs are built at the model's ``radial_cutoff``: ``data.radial_cutoff`` is derived from it.

    Giving ``data.radial_cutoff`` is allowed only when it equals the model's (older configs say both);
    a different value is an error naming both keys, since a model evaluated at one cutoff and
    trained on graphs of another is silently wrong.
    """
    cutoff = float(model.radial_cutoff)
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
    try:
        return validate_config(raw, base_dir=path.parent)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error
