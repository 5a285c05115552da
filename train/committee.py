"""Train a committee: one run per seed of ``trainer.committee_seeds``, each in ``run_dir/member_<seed>/``.

.. code-block:: yaml

    trainer:
      run_dir: runs/3bpa_committee
      committee_seeds: [0, 1, 2]     # -> runs/3bpa_committee/member_0/model.pt, member_1/..., member_2/...

Each member is the configured run with ``trainer.seed`` and ``model.seed`` set to its seed: the
weights are initialised differently, while the data split and the batch order (both ``data.seed``)
stay the same, so every member sees the same frames in the same order and their spread measures
the model's initialisation, not a change of data. Members run one after another, each with
the full budget of the ``trainer:`` section. Use them together with
``EquimolCalculator([member_0/model.pt, ...])`` (:mod:`equimol.committee`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from .config import TrainingConfig


def member_config(config: TrainingConfig, seed: int) -> TrainingConfig:
    """The configuration of the committee member with ``seed`` (its own run folder, seeds set)."""
    member = copy.deepcopy(config)
    member.trainer.seed = seed
    member.trainer.committee_seeds = None
    member.trainer.run_dir = str(Path(config.trainer.run_dir) / f"member_{seed}")
    member.model["seed"] = seed
    return member


def train_committee(config: TrainingConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train every member (see the module docstring).

    Returns:
        ``{"run_dir", "model": [model file per member], "test": [test metrics per member],
        "seeds": [...]}``. With ``resume``, members whose ``model.pt`` exists are kept as they are and
        the first unfinished one continues from its last checkpoint; ``overwrite`` replaces every member's run.
    """
    from .run import train

    seeds = list(config.trainer.committee_seeds or [])
    result: dict[str, Any] = {"run_dir": str(Path(config.trainer.run_dir).expanduser().resolve()), "seeds": seeds}
    result["model"], result["test"] = [], []
    for seed in seeds:
        member = member_config(config, seed)
        model_path = Path(member.trainer.run_dir).expanduser().resolve() / "model.pt"
        if resume and model_path.is_file():
            result["model"].append(str(model_path))
            result["test"].append(None)
            continue
        last = model_path.parent / "checkpoints" / "last.ckpt"
        outcome = train(member, resume=resume and last.is_file(), overwrite=overwrite)
        result["model"].append(outcome["model"])
        result["test"].append(outcome["test"])
    return result
