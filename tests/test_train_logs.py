"""Training logs: one validation line in meV per validation, no Lightning noise users cannot act on,
``best.ckpt`` after a run shorter than its first validation, and the Weights & Biases logger offline.

The console run is a real ``equimol train`` process (Lightning's tip goes through its own stderr
handler): 3 steps of an 8-batch epoch, then ``--resume`` inside the epoch to 5 steps.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from equimol.train.config import ConfigError, load_config
from equimol.train.console import validation_line
from equimol.train.run import train
from test_train_e2e import write_tiny_config

NOISE = (
    "litlogger",
    "LeafSpec",
    "could not find the monitored key",
    "dataloader is not resumable",
    "exists and is not empty",
)


def _equimol(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("equimol")), *arguments]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_short_run_prints_validation_lines_writes_best_and_stays_quiet(shared_data: Path, tmp_path: Path) -> None:
    config = write_tiny_config(shared_data, tmp_path, max_steps=3, checkpoint_every_n_steps=2, test_after_fit=False)
    first = _equimol("train", str(config), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()  # validated once at the end
    resumed = _equimol("train", str(config), "--resume", "trainer.max_steps=5", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for run in (first, resumed):
        lines = [line for line in run.stdout.splitlines() if line.startswith("validation epoch")]
        assert len(lines) == 1, run.stdout
        assert " meV/atom (" in lines[0] and " meV/Å" in lines[0]
        output = run.stdout + run.stderr
        assert not [noise for noise in NOISE if noise in output], output[-3000:]


def test_validation_line_reports_stress_when_there_is_stress() -> None:
    values = {"energy_per_atom_rmse": 0.00123, "energy_rmse": 0.0332, "forces_rmse": 0.0456, "stress_rmse": 1.2e-4}
    line = validation_line(values, epoch=3, step=120)
    assert line == "validation epoch 3 step 120: E 1.23 meV/atom (33.2 meV), F 45.6 meV/Å, S 0.120 meV/Å³"
    assert "S " not in validation_line({"forces_rmse": 0.1}, 0, 1)


def test_wandb_logger_runs_offline(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb", reason="the wandb extra is part of the test extra")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    config = write_tiny_config(shared_data, tmp_path, max_steps=2, test_after_fit=False)
    train(load_config(config, ["trainer.logger=[csv,wandb]", "trainer.wandb_project=equimol-test"]))
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
    assert not (tmp_path / "run" / "tensorboard").exists()


@pytest.mark.parametrize("loggers", ["[csv,mlflow]", "[csv,csv]"])
def test_unknown_or_repeated_loggers_name_the_key(shared_data: Path, tmp_path: Path, loggers: str) -> None:
    with pytest.raises(ConfigError, match="trainer.logger must be a list of distinct loggers"):
        load_config(write_tiny_config(shared_data, tmp_path), [f"trainer.logger={loggers}"])
