r"""Error metrics accumulated over an evaluation, exact under any batching and across processes.

For predictions :math:`\hat y` and labels :math:`y` over :math:`N` items,
:math:`\mathrm{RMSE} = \sqrt{\sum (\hat y - y)^2 / N}` and :math:`\mathrm{MAE} = \sum |\hat y - y| / N`.
Items: structures for ``energy`` (eV) and ``energy_per_atom`` (eV/atom), force components on
masked atoms for ``forces`` (eV/Å), stress components of labelled structures for ``stress`` (eV/Å³).
Sums, not means, are accumulated, so the result does not depend on batch sizes, and
:meth:`ErrorMetrics.reduce` adds the sums of every DDP process before the division. Each structure
may carry a weight (0 for the padding of :mod:`equimol.train.eval_sharding`), which multiplies its
errors and counts.
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

    def _add(self, name: str, error: torch.Tensor, weight: torch.Tensor) -> None:
        """Add ``error`` ``[k, ...]`` with a weight ``[k]`` per leading item (0: padding, see eval_sharding)."""
        error = error.detach().to(torch.float64).cpu().reshape(len(weight), -1)
        weight = weight.detach().to(torch.float64).cpu().view(-1, 1).expand_as(error)
        row = QUANTITIES.index(name)
        self.sums[row, 0] += (weight * error.pow(2)).sum()
        self.sums[row, 1] += (weight * error.abs()).sum()
        self.sums[row, 2] += weight.sum()

    def update(self, prediction: dict[str, torch.Tensor], graph, target_energy: torch.Tensor) -> None:
        """Add a batch: ``prediction`` of the model, the labelled ``graph``, ``[B]`` target energies (eV).

        A ``[B]`` ``graph.eval_weight`` (:mod:`equimol.train.eval_sharding`) weights each structure (1 if absent).
        """
        energy_error = prediction["energy"] - target_energy
        weight = getattr(graph, "eval_weight", None)
        if weight is None:
            weight = torch.ones(energy_error.shape[0], dtype=torch.float64)
        self._add("energy", energy_error, weight)
        self._add("energy_per_atom", energy_error / structure_sizes(graph), weight)
        if "forces" in prediction and getattr(graph, "forces", None) is not None:
            error = prediction["forces"] - graph.forces
            batch = getattr(graph, "batch", None)
            atom_weight = weight.to(error.device)[batch] if batch is not None else weight.expand(error.shape[0])
            mask = getattr(graph, "force_mask", None)
            if mask is not None:
                error, atom_weight = error[mask], atom_weight[mask]
            self._add("forces", error, atom_weight)
        if "stress" in prediction and getattr(graph, "stress", None) is not None:
            self._add("stress", prediction["stress"] - graph.stress.view(-1, 3, 3), weight)

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
