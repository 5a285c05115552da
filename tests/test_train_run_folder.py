"""Run-folder safety (issue cases 1 and 2): a finished run is never trained over, mixed with another run's
checkpoints, or resumed under a config that changes what the run is. The same refusals through the real
CLI, with exit status 2 and nothing written, are cases of ``tests/test_cli_errors.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from equimol.train.run_folder import (
    RunFolderError,
    check_run_folder,
    clear_run_folder,
    holds_run,
    unresumable_changes,
)

CONFIG = {
    "model": {"species": ["H", "C"], "channels": 4, "e0s": "auto", "avg_num_neighbors": "auto"},
    "data": {"train": "a.xyz", "batch_size": 2, "num_workers": 0},
    "loss": {"forces_weight": 100.0},
    "optimizer": {"lr": 0.01},
    "scheduler": {"name": "plateau"},
    "trainer": {"max_epochs": 2, "seed": 0, "precision": 64, "run_dir": "run"},
}
RESOLVED = {**CONFIG, "model": {**CONFIG["model"], "e0s": {1: -13.6, 6: -1029.5}, "avg_num_neighbors": 9.5}}


def finished_run(folder: Path, checkpoint: object = None) -> Path:
    run = folder / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("# statistics comment\n" + yaml.safe_dump(RESOLVED, sort_keys=False))
    torch.save(checkpoint or {"state_dict": {}, "model_config": {}}, run / "checkpoints" / "last.ckpt")
    torch.save({"state_dict": {}, "model_config": {}}, run / "checkpoints" / "best.ckpt")
    (run / "model.pt").write_bytes(b"model of the earlier run")
    return run


def test_a_folder_holding_a_run_is_refused_naming_it(tmp_path: Path) -> None:
    run = finished_run(tmp_path)
    with pytest.raises(RunFolderError, match=rf"{run}.*already holds a run.*--resume.*--overwrite"):
        check_run_folder(run, CONFIG, resume=False, overwrite=False)
    check_run_folder(run, CONFIG, resume=False, overwrite=True)
    check_run_folder(tmp_path / "fresh", CONFIG, resume=False, overwrite=False)
    (tmp_path / "empty").mkdir()
    check_run_folder(tmp_path / "empty", CONFIG, resume=False, overwrite=False)
    with pytest.raises(RunFolderError, match="contradict"):
        check_run_folder(run, CONFIG, resume=True, overwrite=True)


def test_overwrite_removes_every_product_of_the_earlier_run(tmp_path: Path) -> None:
    """So that model.pt can never be exported from the earlier run's best.ckpt."""
    run = finished_run(tmp_path)
    (run / "notes.txt").write_text("the user's own file")
    clear_run_folder(run)
    assert not holds_run(run) and sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_resume_compares_the_config_before_anything_is_written(tmp_path: Path) -> None:
    run = finished_run(tmp_path)
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    longer = {**CONFIG, "trainer": {**CONFIG["trainer"], "max_epochs": 10}, "loss": {"forces_weight": 10.0}}
    check_run_folder(run, longer, resume=True, overwrite=False)  # length, loss weights, workers: resumable
    changed = {
        **CONFIG,
        "model": {**CONFIG["model"], "channels": 8},
        "data": {**CONFIG["data"], "train": "b.xyz", "num_workers": 4},
        "trainer": {**CONFIG["trainer"], "seed": 1},
    }
    with pytest.raises(RunFolderError, match=r"data\.train, model\.channels, trainer\.seed, which a resumed run"):
        check_run_folder(run, changed, resume=True, overwrite=False)
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before


def test_auto_keys_match_their_resolved_values_and_fixed_ones_must_agree() -> None:
    assert unresumable_changes(RESOLVED, CONFIG) == []
    fixed = {**CONFIG, "model": {**RESOLVED["model"], "e0s": {1: -13.6, 6: -1000.0}}}
    assert unresumable_changes(RESOLVED, fixed) == ["model.e0s.6"]
    assert unresumable_changes(RESOLVED, {**CONFIG, "optimizer": {"lr": 0.1}}) == ["optimizer.lr"]


def test_resume_needs_a_whole_checkpoint(tmp_path: Path) -> None:
    run = finished_run(tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(RunFolderError, match=r"last\.ckpt' is damaged"):
        check_run_folder(run, CONFIG, resume=True, overwrite=False)
    last.unlink()
    with pytest.raises(RunFolderError, match=r"no checkpoint .*last\.ckpt"):
        check_run_folder(run, CONFIG, resume=True, overwrite=False)
