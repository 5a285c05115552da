"""``trainer.snapshot_cpu_times`` and the CPU clock of ``trainer.max_cpu_time`` (``train/cpu_budget.py``).

A tiny run writes one EMA snapshot per requested CPU time: each is a model file whose weights are the
EMA weights at the batch that crossed that time (checked to 0 by exporting the module's EMA at the same
step), and whose metadata says when it was taken. The clock is saved in checkpoints and continues on
resume, so a snapshot already passed is not written again.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import pytest
import torch
from equimol.train.config import ConfigError, load_config, validate_config
from equimol.train.cpu_budget import CPUTimeBudget, cpu_seconds, snapshot_path
from equimol.train.run import train
from test_train_e2e import tiny_config, write_tiny_config

from equimol.export import read_model_file


class BurnCPU(L.Callback):
    """Spend ``seconds`` of CPU time after every batch, so that a few batches cross the snapshot times."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        end = time.process_time() + self.seconds
        while time.process_time() < end:
            pass


def test_snapshots_are_ema_model_files_at_their_cpu_times(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    import equimol.train.run as run

    callbacks = run._callbacks
    monkeypatch.setattr(run, "_callbacks", lambda c, d: [BurnCPU(0.25), *callbacks(c, d)])
    path = write_tiny_config(
        shared_data, tmp_path, max_epochs=50, max_cpu_time=2.2, snapshot_cpu_times=[0.5, 1.5], test_after_fit=False
    )
    train(load_config(path))
    run_dir = tmp_path / "run"
    first, second = (read_model_file(snapshot_path(run_dir, t)) for t in (0.5, 1.5))
    assert snapshot_path(run_dir, 0.5).name == "model_cpu0.5.pt"
    for payload, target in ((first, 0.5), (second, 1.5)):
        assert payload["metadata"]["snapshot_cpu_s"] == target
        assert target <= payload["metadata"]["cpu_s"] < target + 1.0
        assert payload["metadata"]["ema"] is True
    assert first["metadata"]["global_step"] < second["metadata"]["global_step"]
    assert any(not torch.equal(a, second["state_dict"][name]) for name, a in first["state_dict"].items())


def test_snapshot_weights_are_the_ema_weights(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    """The snapshot holds the EMA average at its step, not the raw weights."""
    import equimol.train.run as run

    seen: dict = {}

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, *args) -> None:
            if trainer.global_step == 3:
                seen["ema"] = {k: v.clone() for k, v in module.ema.shadow.items()}
                seen["raw"] = {k: v.detach().clone() for k, v in module.model.named_parameters()}

    class StepClock(CPUTimeBudget):  # the clock reads steps, so the snapshot lands at step 3 exactly
        def elapsed(self) -> float:
            return float(self._trainer.global_step) if hasattr(self, "_trainer") else 0.0

        def on_train_start(self, trainer, module) -> None:
            self._trainer = trainer

    def with_clock(config, run_dir):
        kept = [c for c in callbacks(config, run_dir) if not isinstance(c, CPUTimeBudget)]
        return [Record(), *kept, StepClock(None, [3.0], run_dir)]

    callbacks = run._callbacks
    monkeypatch.setattr(run, "_callbacks", with_clock)
    train(load_config(write_tiny_config(shared_data, tmp_path, max_steps=5, test_after_fit=False)))
    state = read_model_file(snapshot_path(tmp_path / "run", 3))["state_dict"]
    for name, average in seen["ema"].items():
        assert torch.equal(state[name], average.to(state[name].dtype)), name
    assert any(not torch.equal(state[name], raw) for name, raw in seen["raw"].items())


def test_the_clock_continues_on_resume(tmp_path: Path) -> None:
    clock = CPUTimeBudget(10.0, [1.0, 5.0], tmp_path)
    clock.load_state_dict({"cpu_seconds": 3.0})
    assert clock.pending == [5.0]
    assert clock.elapsed() == pytest.approx(3.0)
    saved = clock.state_dict()["cpu_seconds"]
    assert saved == pytest.approx(3.0)


def test_the_clock_counts_waited_for_child_processes() -> None:
    """Inductor's C++ compiler runs as child processes: their CPU time is part of the training's cost."""
    import subprocess
    import sys

    before, own = cpu_seconds(), time.process_time()
    subprocess.run(
        [sys.executable, "-c", "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass"],
        check=True,
    )
    assert time.process_time() - own < 0.3
    assert cpu_seconds() - before >= 0.5


def test_bad_snapshot_times_are_config_errors(shared_data: Path, tmp_path: Path) -> None:
    config = tiny_config(shared_data, tmp_path, snapshot_cpu_times=[100, -1])
    with pytest.raises(ConfigError, match="trainer.snapshot_cpu_times"):
        validate_config(config)
    config = tiny_config(shared_data, tmp_path, snapshot_cpu_times="soon")
    with pytest.raises(ConfigError, match="trainer.snapshot_cpu_times"):
        validate_config(config)
