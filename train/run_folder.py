"""The run folder's safety rules: a run is never overwritten, mixed with another or resumed under a different config.

``equimol train`` into ``trainer.run_dir``:

* one run at a time: the first process of a run holds an exclusive lock on the folder
  (``run_dir/.equimol.lock``, :func:`equimol.utils.locks.exclusive_lock`) from before these checks
  until it ends; a second ``equimol train`` on the same folder is refused, naming the first one's
  pid, host and command. The kernel releases the lock when the process dies, however it dies;
* a folder that holds no run (absent, or without any of :data:`RESULTS`): a new run. What a start
  that failed before its first checkpoint left (``config.yaml``, logs) is removed when the new run
  begins, so a corrected command just runs again;
* a folder holding a run: refused, naming the folder, unless ``--resume`` (continue it) or
  ``--overwrite`` (its run products are removed, just before the new run writes its first file,
  so ``model.pt`` can never be exported from the old run's ``best.ckpt``);
* a committee folder (``trainer.committee_seeds``: :data:`COMMITTEE_MARKER` and ``member_<seed>/``)
  and a single-run folder are different kinds: neither is trained into the other, with or without
  ``--overwrite`` (:mod:`equimol.train.committee`);
* ``--resume``: ``checkpoints/last.ckpt`` must exist and load, and the folder's ``config.yaml``
  must agree with the new config on every key that a resumed run cannot change
  (:func:`unresumable_changes`): the model's shape, the data, the optimizer and scheduler (their
  state comes from the checkpoint), the precision and the seed. Checked before anything is written.

Every refusal is a :class:`RunFolderError` (a ``ValueError``: one line from the CLI, exit status 2).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from equimol.config_schema import describe, with_current_names
from equimol.errors import ConfigError, EquimolInputError
from equimol.models.config import ModelConfig

# what a run writes into its folder (run.py); --overwrite and a new start remove exactly these
RUN_PRODUCTS = (
    "config.yaml",
    "checkpoints",
    "model.pt",
    "test_metrics.json",
    "test_parity.png",
    "csv",
    "tensorboard",
    "snapshots",
)
# the products worth keeping: a folder with any of them (a file in them) holds a run
RESULTS = ("checkpoints", "model.pt", "test_metrics.json", "snapshots")
LOCK = ".equimol.lock"
COMMITTEE_MARKER = "committee.yaml"
# keys a resumed run may change: how long and how it runs, how it logs, and the loss weights
RESUMABLE = {
    "loss": None,  # every key
    "trainer": {
        "run_dir",
        "max_epochs",
        "max_steps",
        "max_time",
        "num_threads",
        "retain_freed_memory",
        "compile_step",
        "progress_bar",
        "log_every_n_steps",
        "test_after_fit",
        "early_stopping_patience",
        "checkpoint_every_n_steps",
        "check_val_every_n_epoch",
        "gradient_clip_val",
        "accelerator",
        "devices",
        "strategy",
    },
    "data": {"num_workers", "pin_memory", "cache_dir", "data_dir"},
}
AUTO = "auto"


class RunFolderError(EquimolInputError):
    """A run folder that cannot be used as asked; the message names the folder or the keys."""


def _has_files(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(item.is_file() for item in path.rglob("*")))


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds the results of a run (a file among :data:`RESULTS`)."""
    return run_dir.is_dir() and any(_has_files(run_dir / name) for name in RESULTS)


def committee_members(run_dir: Path) -> list[Path]:
    """The ``member_<seed>`` folders of ``run_dir`` that hold a run."""
    if not run_dir.is_dir():
        return []
    return sorted(path for path in run_dir.glob("member_*") if path.is_dir() and holds_run(path))


def holds_committee(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a committee (its :data:`COMMITTEE_MARKER`, or member folders with runs)."""
    return (run_dir / COMMITTEE_MARKER).is_file() or bool(committee_members(run_dir))


@contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block (see the module docstring); a folder the block created and left
    empty (a refused start) is removed again.

    Raises:
        RunFolderError: ``run_dir`` is a file.
        LockedError: another process holds the folder (the message names it).
    """
    from equimol.utils.io import output_error
    from equimol.utils.locks import exclusive_lock

    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"trainer.run_dir {str(run_dir)!r} is a file; choose a folder")
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise output_error(run_dir, error) from error
    try:
        with exclusive_lock(run_dir / LOCK, f"trainer.run_dir {str(run_dir)!r}"):
            yield
    finally:
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()


def _flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, Mapping):
        flat: dict[str, Any] = {}
        for key, value in values.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat if flat or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: values}


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
        return float(old) == float(new)
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return len(old) == len(new) and all(_same(a, b) for a, b in zip(old, new))
    return old == new


def _model_values(config: Mapping) -> dict:
    """``config`` with its ``model`` section as :class:`ModelConfig` writes it (defaults filled in, species as
    atomic numbers, ``sh_lmax: null`` as ``lmax``), so that two spellings of one model compare equal. A
    section that does not validate is left as it is (it then differs key by key)."""
    config = dict(config)
    model = config.get("model")
    if isinstance(model, Mapping):
        values = {key: value for key, value in model.items() if key != "init_from"}
        try:
            normalised = ModelConfig.from_dict(values).to_dict()
        except ConfigError:
            return config
        config["model"] = {**normalised, **({"init_from": model["init_from"]} if "init_from" in model else {})}
    return config


def unresumable_changes(previous: Mapping, current: Mapping) -> list[str]:
    """Dotted keys whose value differs between the run's ``config.yaml`` and the new config, and that a
    resumed run cannot change (everything but :data:`RESUMABLE`). A model key that the new config
    leaves ``auto`` matches the value it was resolved to."""
    old = _flatten(_model_values(with_current_names(previous)))
    new = _flatten(_model_values(current))
    # a key that did not exist when the run was written ran with the value that is its default now
    defaults = {f"{e['section']}.{e['key']}": e["default"] for e in describe() if e["section"] != "model.tp_options"}
    changed = []
    for key in sorted(set(old) | set(new)):
        if key not in old and key in defaults and _same(defaults[key], new.get(key)):
            continue
        section, _, name = key.partition(".")
        allowed = RESUMABLE.get(section, set())
        if allowed is None or name.split(".")[0] in allowed:
            continue
        if section == "model" and (current.get("model") or {}).get(name.split(".")[0]) == AUTO:
            continue  # resolved from the data when the run started: the resolved value is the run's
        if not _same(old.get(key), new.get(key)):
            changed.append(key)
    return changed


def check_run_folder(run_dir: Path, config: Mapping, resume: bool, overwrite: bool) -> None:
    """Refuse a run that would overwrite, mix or wrongly resume the run in ``run_dir`` (see the module docstring).

    Args:
        run_dir: the resolved ``trainer.run_dir``.
        config: the new configuration (``TrainingConfig.as_dict()``).
        resume: ``--resume`` was given.
        overwrite: ``--overwrite`` was given.
    """
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other; give one of them")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"trainer.run_dir {str(run_dir)!r} is a file; choose a folder")
    if holds_committee(run_dir):
        members = ", ".join(path.name for path in committee_members(run_dir)) or COMMITTEE_MARKER
        raise RunFolderError(
            f"trainer.run_dir {str(run_dir)!r} holds a committee ({members}); a single run cannot go there, "
            "with or without --overwrite: choose another trainer.run_dir (or delete the folder)"
        )
    if resume:
        _check_resume(run_dir, config)
    elif holds_run(run_dir) and not overwrite:
        raise RunFolderError(
            f"trainer.run_dir {str(run_dir)!r} already holds a run; give --resume to continue it, "
            "--overwrite to replace it, or another trainer.run_dir"
        )


def _check_resume(run_dir: Path, config: Mapping) -> None:
    from equimol.export import ModelFileError

    from .checkpoints import read_checkpoint

    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise RunFolderError(
            f"--resume: no checkpoint {str(last)!r} (a run that stopped before its first checkpoint has none); "
            "train without --resume to start the run"
        )
    try:  # a damaged checkpoint fails here, before anything is written, not inside Lightning
        read_checkpoint(last)
    except ModelFileError as error:
        raise RunFolderError(
            f"--resume: checkpoint {str(last)!r} is damaged or not a checkpoint of `equimol train` ({error}); "
            "restore it from a copy, or start again with --overwrite"
        ) from error
    recorded = run_dir / "config.yaml"
    if not recorded.is_file():
        raise RunFolderError(f"--resume: {str(recorded)!r} is missing, so the run's config cannot be compared")
    try:
        previous = yaml.safe_load(recorded.read_text())
    except yaml.YAMLError as error:
        raise RunFolderError(f"--resume: {str(recorded)!r} is not valid YAML ({error})") from error
    changed = unresumable_changes(previous or {}, config)
    if changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise RunFolderError(
            f"--resume: the config differs from {str(recorded)!r} in {shown}, which a resumed run cannot change; "
            "restore those values, or start a new run (another trainer.run_dir, or --overwrite)"
        )


def clear_run_folder(run_dir: Path) -> None:
    """Remove the run products (:data:`RUN_PRODUCTS`) of an earlier run from ``run_dir`` (``--overwrite``)."""
    for name in RUN_PRODUCTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
