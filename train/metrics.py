r"""Error metrics accumulated over an evaluation, exact under any batching and across processes.

For predictions :math:`\hat y` and labels :math:`y` over :math:`N` items,
:math:`\mathrm{RMSE} = \sqrt{\sum (\hat y - y)^2 / N}` and :math:`\mathrm{MAE} = \sum |\hat y - y| / N`.
Items: structures for ``energy`` (eV) and ``energy_per_atom`` (eV/atom), force components on
masked atoms for ``forces`` (eV/Å), stress components of labelled structures for ``stress`` (eV/Å³).
Sums, not means, are accumulated, so the result does not depend on batch sizes, and
:meth:`ErrorMetrics.reduce` adds the sums of every DDP process before the division.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .losses import structure_sizes

QUANTITIES = ("energy", "energy_per_atom", "forces", "stress")


class ErrorMetrics:
    """Running sums of squared and absolute errors and counts, per quantity (float64, on the CPU)."""

    def __init__(self) -> None:
        # rows: squared error, absolute error, count
        self.sums = torch.zeros(len(QUANTITIES), 3, dtype=torch.float64)

    def _add(self, name: str, error: torch.Tensor) -> None:
        error = error.detach().to(torch.float64).cpu().reshape(-1)
        row = QUANTITIES.index(name)
        self.sums[row, 0] += error.pow(2).sum()
        self.sums[row, 1] += error.abs().sum()
        self.sums[row, 2] += error.numel()

    def update(self, prediction: dict[str, torch.Tensor], graph, target_energy: torch.Tensor) -> None:
        """Add a batch: ``prediction`` of the model, the labelled ``graph``, ``[B]`` target energies (eV)."""
        energy_error = prediction["energy"] - target_energy
        self._add("energy", energy_error)
        self._add("energy_per_atom", energy_error / structure_sizes(graph))
        if "forces" in prediction and getattr(graph, "forces", None) is not None:
            error = prediction["forces"] - graph.forces
            mask = getattr(graph, "force_mask", None)
            self._add("forces", error if mask is None else error[mask])
        if "stress" in prediction and getattr(graph, "stress", None) is not None:
            self._add("stress", prediction["stress"] - graph.stress.view(-1, 3, 3))

    def reduce(self, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace the sums by their total over processes (``all_reduce_sum`` e.g. the strategy's reduce)."""
        self.sums = all_reduce_sum(self.sums.clone()).to(torch.float64).cpu()

    def compute(self) -> dict[str, float]:
        """``{"energy_rmse": ..., "energy_mae": ..., "forces_rmse": ..., ...}`` for quantities that were seen."""
        result = {}
        for row, name in enumerate(QUANTITIES):
            squared, absolute, count = self.sums[row].tolist()
            if count > 0:
                result[f"{name}_rmse"] = (squared / count) ** 0.5
                result[f"{name}_mae"] = absolute / count
        return result
