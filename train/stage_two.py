"""``loss.stage_two``: MACE's second stage (``--swa``): from a fraction of the budget on, other loss weights and lr.

From ``start`` (the fraction of whichever training budget runs out first, as
:func:`equimol.train.budget_schedule.budget_progress` measures it) on, the training loss takes the
stage's term weights and, unless ``lr`` is null, every parameter group the stage's learning rate
(times its fine-tuning factor), held constant: the scheduler stops. :class:`~equimol.train.module.
PotentialModule` makes the switch; ``val_loss`` keeps the stage-one weights. MACE's stage two
typically raises the energy weight (energy 1000, forces 100).
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass

from .schema import ConfigError, check_section


@dataclass
class StageTwoConfig:
    """The ``loss.stage_two`` mapping (module docstring)."""

    start: float = 0.8
    energy_weight: float = 1000.0
    forces_weight: float = 100.0
    stress_weight: float = 0.0
    lr: float | None = 0.001


def stage_two_config(values: Mapping) -> StageTwoConfig:
    """``loss.stage_two`` checked (keys, types, ranges); every error names ``loss.stage_two.<key>``."""
    check_section("loss.stage_two", values, typing.get_type_hints(StageTwoConfig))
    stage = StageTwoConfig(**values)
    weights = (stage.energy_weight, stage.forces_weight, stage.stress_weight)
    checks = [
        (0 < stage.start < 1, "start", "in (0, 1) (a fraction of the training budget)", stage.start),
        (min(weights) >= 0 and sum(weights) > 0, "*_weight", ">= 0 and not all zero", weights),
        (stage.lr is None or stage.lr > 0, "lr", "> 0 or null (keep the scheduler's)", stage.lr),
    ]
    for ok, key, expected, value in checks:
        if not ok:
            raise ConfigError(f"loss.stage_two.{key} must be {expected}, got {value!r}")
    return stage
