"""A training budget in CPU seconds of this process: ``trainer.max_cpu_time``.

``trainer.max_time`` is wall-clock time, which on a shared machine depends on everything else that runs
there. CPU time (``time.process_time()``: user + system time of every thread of this process) is what one
training job itself consumed, so a CPU-time budget gives every run the same amount of computation
however loaded the machine is. With one intra-op thread (``trainer.num_threads: 1``) and no data-loader
worker processes it equals the wall time of the same run on an otherwise idle core; worker processes are
not counted. The budget counts from the start of fitting (like Lightning's ``Timer`` for ``max_time``),
is checked after every training batch, and stops the fit the way ``max_time`` does.
"""

from __future__ import annotations

import time

import lightning as L


class CPUTimeBudget(L.Callback):
    """Stop fitting once this process has used ``max_cpu_time`` CPU seconds since fitting began.

    Args:
        max_cpu_time: seconds of CPU time (> 0).
    """

    def __init__(self, max_cpu_time: float) -> None:
        if max_cpu_time <= 0:
            raise ValueError(f"trainer.max_cpu_time must be positive (seconds), got {max_cpu_time}")
        self.max_cpu_time = float(max_cpu_time)
        self._start: float | None = None

    def elapsed(self) -> float:
        """CPU seconds used since fitting began (0 before)."""
        return 0.0 if self._start is None else time.process_time() - self._start

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # On resume the budget restarts: the CPU time of an earlier process is not recoverable.
        self._start = time.process_time()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        out_of_budget = self.elapsed() >= self.max_cpu_time
        # every DDP process stops at the same step if any one of them is out of budget
        if trainer.strategy.reduce_boolean_decision(out_of_budget, all=False):
            trainer.should_stop = True
