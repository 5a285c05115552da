"""``train(config)``: what ``equimol train`` runs, a committee when ``trainer.committee_seeds`` is set, else one run.

Committees sit above single runs: :mod:`equimol.train.committee` trains each member with
:func:`equimol.train.run.train`, and this module chooses between the two, so that no module of
``train`` imports one that imports it back.
"""

from __future__ import annotations

from typing import Any

from .committee import train_committee
from .config import TrainingConfig
from .run import train as train_run


def train(config: TrainingConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train ``config``: one run (:func:`equimol.train.run.train`) or, with ``trainer.committee_seeds``, one run per
    seed (:func:`equimol.train.committee.train_committee`). ``resume`` and ``overwrite`` as there."""
    if config.trainer.committee_seeds:
        return train_committee(config, resume, overwrite)
    return train_run(config, resume, overwrite)
