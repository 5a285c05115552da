r"""Cosine decay of the learning rate over the training budget, whichever budget runs out first.

A fixed budget (``trainer.max_cpu_time``, ``max_time``, ``max_steps`` or ``max_epochs``) is known in
advance, so the learning rate can anneal to ``min_lr`` exactly when training stops, without guessing
how many epochs the budget buys on a given machine. With progress ``p`` in [0, 1], the largest
fraction used of any budget that is set,

.. math:: \mathrm{lr}(p) = \mathrm{min\_lr} + (\mathrm{lr} - \mathrm{min\_lr})\, \tfrac12 (1 + \cos \pi q),
   \qquad q = \max\Bigl(0, \frac{p - s}{1 - s}\Bigr),

updated after every optimizer step. ``s`` (``scheduler.decay_start``) holds the peak rate for that
fraction of the budget and anneals over the rest (a warm-stable-decay schedule); ``s = 0`` is a cosine
over the whole budget. ``p`` of a CPU-time or wall-time budget differs a little between
DDP processes, so it is reduced to its maximum over the processes: every process applies the same
learning rate, and the weights stay identical.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer

from .cpu_budget import CPUTimeBudget


def budget_progress(trainer: L.Trainer) -> float:
    """The largest fraction used of the budgets set on ``trainer`` (0 before fitting, at most 1)."""
    fractions = [0.0]
    for callback in trainer.callbacks:
        if isinstance(callback, CPUTimeBudget) and callback.max_cpu_time is not None:
            fractions.append(callback.elapsed() / callback.max_cpu_time)
        elif isinstance(callback, Timer):
            elapsed, remaining = callback.time_elapsed("train"), callback.time_remaining("train")
            if remaining is not None and elapsed + remaining > 0:
                fractions.append(elapsed / (elapsed + remaining))
    if trainer.max_steps is not None and trainer.max_steps > 0:
        fractions.append(trainer.global_step / trainer.max_steps)
    if trainer.max_epochs is not None and trainer.max_epochs > 0:
        batches = trainer.num_training_batches
        within = trainer.fit_loop.epoch_loop.batch_progress.current.completed / batches if batches else 0.0
        fractions.append((trainer.current_epoch + min(within, 1.0)) / trainer.max_epochs)
    progress = torch.tensor(min(1.0, max(fractions)), dtype=torch.float64)
    if trainer.world_size > 1:
        progress = trainer.strategy.reduce(progress, reduce_op="max")
    return float(progress)


class BudgetCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """``lr(p)`` of the module docstring for every parameter group, ``p = progress()``.

    Args:
        optimizer: the optimizer; each group's initial ``lr`` is its peak.
        progress: returns the budget fraction used, in [0, 1] (:func:`budget_progress`).
        floor: ``min_lr / lr`` (the factor at the end of the budget).
        start: ``s``, the budget fraction at which the decay begins, in [0, 1).
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, progress: Callable[[], float], floor: float = 0.0, start: float = 0.0
    ) -> None:
        self.progress, self.floor, self.start = progress, float(floor), float(start)
        super().__init__(optimizer)

    def factor(self) -> float:
        """The current multiplier of the peak learning rate."""
        progress = min(1.0, max(0.0, (self.progress() - self.start) / (1.0 - self.start)))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        factor = self.factor()
        return [base * factor for base in self.base_lrs]

    def state_dict(self) -> dict:
        # the progress callable (a bound method of the module) is rebuilt, never saved
        return {key: value for key, value in super().state_dict().items() if key != "progress"}
