"""Training measured in CPU seconds of this process: the budget ``trainer.max_cpu_time`` and the
model snapshots ``trainer.snapshot_cpu_times``.

``trainer.max_time`` is wall-clock time, which on a shared machine depends on everything else that runs
there. CPU time (:func:`cpu_seconds`: user + system time of every thread of this process, plus that of
the child processes it has waited for) is what one training job itself consumed, so a CPU-time budget
gives every run the same amount of computation however loaded the machine is. The children are the C++
compiler runs of Inductor (``trainer.compile_step``), which cost as much as the compilation in this process
itself; data-loader worker processes, which run until the end of fitting, are not counted. With one
intra-op thread (``trainer.num_threads: 1``) and no worker processes the clock equals the wall time of
the same run on an otherwise idle core.

The clock counts from the start of fitting (like Lightning's ``Timer`` for ``max_time``), so it includes
a compilation made at the second step (``trainer.compile_step``). It is read after every training batch. It is
saved in every checkpoint and continues on ``--resume``: a resumed run adds its own CPU time to what the
interrupted one had used at its last checkpoint (the work done after that checkpoint is done again and
counted again).

* **Budget:** once ``max_cpu_time`` seconds are used, the fit stops the way ``max_time`` stops it; under
  DDP every process stops at the same step if any one of them is out of budget.
* **Snapshots:** the first training batch that ends at or after each of ``snapshot_cpu_times`` writes the
  model with its EMA weights (the weights that validation and export use) to
  ``run_dir/snapshots/model_cpu<seconds>.pt``, a model file like ``run_dir/model.pt``
  (:mod:`equimol.export`). Learning curves (accuracy against training time) are read off those files.
  Only the first process writes; the snapshot's metadata records the CPU seconds and the step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its waited-for child processes."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def snapshot_path(run_dir: str | Path, seconds: float) -> Path:
    """``run_dir/snapshots/model_cpu<seconds>.pt`` (seconds written as an integer when they are one)."""
    label = f"{int(seconds)}" if float(seconds).is_integer() else f"{seconds:g}"
    return Path(run_dir) / "snapshots" / f"model_cpu{label}.pt"


class CPUTimeBudget(L.Callback):
    """CPU-time budget and snapshots of one training run (see the module docstring).

    Args:
        max_cpu_time: stop after this many CPU seconds (> 0), or ``None`` for no budget.
        snapshot_cpu_times: CPU seconds (> 0) at which to write a snapshot model file.
        run_dir: the run folder that holds ``snapshots/`` (needed with ``snapshot_cpu_times``).
    """

    def __init__(
        self,
        max_cpu_time: float | None = None,
        snapshot_cpu_times: Sequence[float] = (),
        run_dir: str | Path | None = None,
    ) -> None:
        if max_cpu_time is not None and max_cpu_time <= 0:
            raise ValueError(f"trainer.max_cpu_time must be positive (seconds), got {max_cpu_time}")
        if any(t <= 0 for t in snapshot_cpu_times):
            raise ValueError(f"trainer.snapshot_cpu_times must be positive (seconds), got {list(snapshot_cpu_times)}")
        if snapshot_cpu_times and run_dir is None:
            raise ValueError("snapshots need the run folder (run_dir)")
        self.max_cpu_time = None if max_cpu_time is None else float(max_cpu_time)
        self.pending = sorted(float(t) for t in snapshot_cpu_times)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self._start: float | None = None
        self._used_before = 0.0  # CPU seconds of the interrupted run, from the checkpoint

    def elapsed(self) -> float:
        """CPU seconds of training so far, the interrupted run's included (0 before fitting)."""
        return self._used_before + (0.0 if self._start is None else cpu_seconds() - self._start)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = cpu_seconds()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        used = self.elapsed()
        while self.pending and used >= self.pending[0]:
            self._write_snapshot(trainer, pl_module, self.pending.pop(0), used)
        if self.max_cpu_time is None:
            return
        # every DDP process stops at the same step if any one of them is out of budget
        if trainer.strategy.reduce_boolean_decision(used >= self.max_cpu_time, all=False):
            trainer.should_stop = True

    def _write_snapshot(self, trainer: L.Trainer, module: Any, target: float, used: float) -> None:
        if not trainer.is_global_zero:
            return
        from equimol.export import export_model

        metadata = {"snapshot_cpu_s": target, "cpu_s": used, "global_step": int(trainer.global_step)}
        ema = getattr(module, "ema", None)
        if ema is None:
            export_model(module.model, snapshot_path(self.run_dir, target), {**metadata, "ema": False})
            return
        with ema.swapped(module.model):
            export_model(module.model, snapshot_path(self.run_dir, target), {**metadata, "ema": True})

    def state_dict(self) -> dict[str, Any]:
        return {"cpu_seconds": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._used_before = float(state_dict.get("cpu_seconds", 0.0))
        self.pending = [t for t in self.pending if t > self._used_before]
