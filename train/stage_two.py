"""``loss.stage_two``: MACE's second stage (``--swa``): from a fraction of the budget on, other loss weights and lr.

From ``start`` (the fraction of whichever training budget runs out first, as
:func:`equimol.train.budget_schedule.budget_progress` measures it) on, the training loss takes the
stage's term weights and, unless ``lr`` is null, every parameter group the stage's learning rate
(times its fine-tuning factor), held constant: the scheduler stops. :class:`~equimol.train.module.
PotentialModule` makes the switch; ``val_loss`` keeps the stage-one weights. MACE's stage two
typically raises the energy weight (energy 1000, forces 100).
"""

from __future__ import annotations

from collections.abc import Mapping

from equimol.config_fields import build_section
from equimol.config_sections import StageTwoConfig

__all__ = ["StageTwoConfig", "stage_two_config"]


def stage_two_config(values: Mapping) -> StageTwoConfig:
    """``loss.stage_two`` checked (keys, types, ranges); every error names ``loss.stage_two.<key>``."""
    return build_section(StageTwoConfig, values, "loss.stage_two")
