"""The configuration reference: every key of every section of a training config, from the classes that check it.

>>> from equimol.config_schema import describe
>>> entry = next(e for e in describe() if e["name"] == "model.channels")
>>> entry["type"], entry["default"], entry["bounds_text"]
('int', 32, '>= 1')

A config has seven sections (:data:`SECTIONS`). Each is a dataclass whose fields declare their meaning,
type, default and limits (:func:`equimol.config_fields.option`); the loader
(:func:`equimol.train.config.load_config`) checks a YAML file against the same classes, so this
reference and what the loader accepts cannot differ. Nested mappings (``model.spe``,
``model.dispersion``, ``loss.stage_two``) are listed as their own sections; ``model.tp_options`` lists
the constructor options of each tensor-product backend (:mod:`equimol.tp.options`), with the backend
named in the entry's ``backend``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from equimol.config_fields import describe_class, upgrade_keys
from equimol.config_sections import (
    DataConfig,
    FinetuneConfig,
    LossConfig,
    ModelTrainingKeys,
    OptimizerConfig,
    SchedulerConfig,
    TrainerConfig,
)
from equimol.models.config import ModelConfig

SECTIONS = ("model", "data", "loss", "optimizer", "scheduler", "trainer", "finetune")
# the dataclass behind each section (``model`` also accepts ModelTrainingKeys)
SECTION_CLASSES: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "loss": LossConfig,
    "optimizer": OptimizerConfig,
    "scheduler": SchedulerConfig,
    "trainer": TrainerConfig,
    "finetune": FinetuneConfig,
}


def backend_option_entries() -> list[dict[str, Any]]:
    """``model.tp_options`` entries of every installed tensor-product backend (``backend`` names it)."""
    from equimol.tp import available_backends, get_backend
    from equimol.tp.options import describe_backend_options

    entries = []
    for name in available_backends():
        entries.extend(describe_backend_options(name, get_backend(name)))
    return entries


def describe(sections: tuple[str, ...] = SECTIONS) -> list[dict[str, Any]]:
    """One entry per config key, section by section, nested sections after the key that holds them.

    Each entry is a dict with ``section`` (``"model.spe"``), ``key``, ``name`` (``"model.spe.mode"``),
    ``type`` (``"int | None"``), ``default``, ``choices`` (a list or None), ``bounds`` (``{"ge": 1}``:
    ``ge``/``gt``/``le``/``lt``), ``bounds_text`` (``">= 1"``), ``auto`` (whether ``"auto"`` is
    accepted: filled from the training data), ``renamed_from`` (older spellings still read) and ``doc``
    (one line); ``model.tp_options`` entries add ``backend``.
    """
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; sections: {list(SECTIONS)}")
    entries: list[dict[str, Any]] = []
    for section in sections:
        entries.extend(describe_class(SECTION_CLASSES[section], section))
        if section == "model":
            entries.extend(describe_class(ModelTrainingKeys, "model"))
            entries.extend(backend_option_entries())
    return entries


def with_current_names(config: Mapping) -> dict:
    """A copy of a recorded config (a run folder's ``config.yaml``) with old key spellings renamed, silently.

    So that a run written before a rename compares equal to the same config written today (``--resume``).
    Sections or values that are not mappings are left as they are for the validator to report.
    """
    config = copy.deepcopy(dict(config))
    for section, cls in SECTION_CLASSES.items():
        if isinstance(config.get(section), Mapping):
            config[section] = upgrade_keys(cls, config[section], section, warn=False)
    model = config.get("model")
    if isinstance(model, Mapping) and isinstance(model.get("tp_options"), Mapping):
        from equimol.tp import get_backend
        from equimol.tp.options import rename_options

        try:
            backend = get_backend(model.get("tp_backend", "cg"))
        except ValueError:
            return config
        model["tp_options"] = rename_options(backend, model["tp_options"], "model.tp_options", warn=False)
    return config


def accepted_keys() -> set[str]:
    """Every dotted key the loader accepts (``model.tp_options.*`` of the installed backends included)."""
    return {entry["name"] for entry in describe()}
