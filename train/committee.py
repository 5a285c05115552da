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

**The folder.** A committee folder holds ``committee.yaml`` (the configuration, seeds included) and
the member folders; it is locked for the whole committee (:func:`~equimol.train.run_folder.run_folder_lock`).
It is never mixed with a single run (:mod:`equimol.train.run_folder`): a committee into a folder
holding a run is refused, as is a run into a committee folder. Into a folder that holds a committee:
``--resume`` continues it (the config must agree with ``committee.yaml``, seeds included); ``--overwrite``
replaces it, removing the member folders of seeds the new committee does not have; neither is refused.
Committee folders written before ``committee.yaml`` existed resume as they are.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import yaml

from equimol.utils.io import atomic_write

from .config import TrainingConfig
from .run import is_first_process, train
from .run_folder import (
    COMMITTEE_MARKER,
    RunFolderError,
    committee_members,
    holds_committee,
    holds_run,
    run_folder_lock,
    unresumable_changes,
)


def member_config(config: TrainingConfig, seed: int) -> TrainingConfig:
    """The configuration of the committee member with ``seed`` (its own run folder, seeds set)."""
    member = copy.deepcopy(config)
    member.trainer.seed = seed
    member.trainer.committee_seeds = None
    member.trainer.run_dir = str(Path(config.trainer.run_dir) / f"member_{seed}")
    member.model.seed = seed
    return member


def train_committee(config: TrainingConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train every member (see the module docstring).

    Returns:
        ``{"run_dir", "model": [model file per member], "test": [test metrics per member],
        "seeds": [...]}``. With ``resume``, members whose ``model.pt`` exists are kept as they are and
        the first unfinished one continues from its last checkpoint; ``overwrite`` replaces every member's run.
    """
    run_dir = Path(config.trainer.run_dir).expanduser().resolve()
    if not is_first_process():
        return _train_members(config, run_dir, resume, overwrite)
    with run_folder_lock(run_dir):
        _check_committee_folder(run_dir, config, resume, overwrite)
        return _train_members(config, run_dir, resume, overwrite)


def _check_committee_folder(run_dir: Path, config: TrainingConfig, resume: bool, overwrite: bool) -> None:
    """Refuse a committee that would mix with, or wrongly resume, what ``run_dir`` holds; record the new one."""
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other; give one of them")
    if holds_run(run_dir):
        raise RunFolderError(
            f"trainer.run_dir {str(run_dir)!r} holds a single run; a committee cannot go there, with or without "
            "--overwrite: choose another trainer.run_dir (or delete the folder)"
        )
    marker = run_dir / COMMITTEE_MARKER
    if holds_committee(run_dir) and not (resume or overwrite):
        members = ", ".join(path.name for path in committee_members(run_dir)) or "no finished member yet"
        raise RunFolderError(
            f"trainer.run_dir {str(run_dir)!r} already holds a committee ({members}); give --resume to continue "
            "it, --overwrite to replace it, or another trainer.run_dir"
        )
    if resume and marker.is_file():
        previous = yaml.safe_load(marker.read_text()) or {}
        changed = unresumable_changes(previous, config.as_dict())
        if changed:
            raise RunFolderError(
                f"--resume: the config differs from {str(marker)!r} in {', '.join(changed[:8])}, which a resumed "
                "committee cannot change; restore those values, or start a new committee (--overwrite)"
            )
    if overwrite:  # members of seeds the new committee does not have would be mixed in with it
        keep = {f"member_{seed}" for seed in config.trainer.committee_seeds or []}
        for member in committee_members(run_dir):
            if member.name not in keep:
                shutil.rmtree(member)
    with atomic_write(marker, "w") as handle:
        handle.write(yaml.safe_dump(config.as_dict(), sort_keys=False))


def _train_members(config: TrainingConfig, run_dir: Path, resume: bool, overwrite: bool) -> dict[str, Any]:
    seeds = list(config.trainer.committee_seeds or [])
    result: dict[str, Any] = {"run_dir": str(run_dir), "seeds": seeds}
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
