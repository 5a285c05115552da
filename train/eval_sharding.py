r"""Validation and test over any number of DDP processes, with the metrics of one process.

Metrics are sums (:class:`~equimol.train.metrics.ErrorMetrics`): squared and absolute errors and
counts, added over every process before the division. They equal one process's metrics exactly
(up to the order of floating-point summation) when

1. every structure is evaluated by exactly one process, and
2. every process takes part in the final sum (an all-reduce is collective: a process that skips it
   leaves the others waiting, which is what happened to a rank with no evaluation batch, since
   Lightning skips the evaluation loop, and its epoch-end hooks, for a loader without batches).

:func:`evaluation_batches` shares the batches out (every ``world_size``-th batch from ``rank`` on;
with fewer batches than processes, the structures are re-cut into ``world_size`` nearly equal
batches). A process left without structures gets one **padding** batch, the first structure again,
which :class:`PaddedDataset` marks with weight 0: it runs the same code and joins the reduction
but adds nothing, so the reduction is a weighted sum, :math:`\sum_p \sum_{s \in p} w_s e_s^2`
over :math:`\sum_p \sum_{s \in p} w_s` items. :func:`evaluation_loader` applies both to a loader.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from equimol.datasets.loader import GraphLoader as DataLoader
from torch.utils.data import Dataset

WEIGHT_KEY = "eval_weight"


def evaluation_batches(batches: Sequence[Sequence[int]], rank: int, world_size: int, num_items: int) -> list[list[int]]:
    """This process's evaluation batches (see the module docstring); never empty.

    Args:
        batches: every batch of the split, as indices into a dataset of ``num_items`` items.
        rank, world_size: this process and the number of processes.
        num_items: size of the dataset the indices refer to; the padding batch is ``[num_items]``
            (read by :class:`PaddedDataset` as item 0 with weight 0).

    Returns:
        lists of indices; over all ranks, every index of ``batches`` exactly once, plus padding.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    batches = [list(batch) for batch in batches]
    if len(batches) < world_size:
        flat = np.asarray([index for batch in batches for index in batch], dtype=np.int64)
        batches = [chunk.tolist() for chunk in np.array_split(flat, world_size) if len(chunk)]
    mine = batches[rank::world_size]
    return mine if mine else [[num_items]]


class PaddedDataset(Dataset):
    """``base`` with a weight on every item (``graph.eval_weight``, ``[1]`` float64): ``dataset[i]`` is
    ``base[i]`` with weight 1 for ``i < len(base)``, and ``base[i - len(base)]`` with weight 0 beyond."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return 2 * len(self.base)

    def __getitem__(self, index: int):
        size = len(self.base)
        graph = self.base[index % size]
        graph[WEIGHT_KEY] = torch.tensor([1.0 if index < size else 0.0], dtype=torch.float64)
        return graph


def evaluation_loader(loader: DataLoader, rank: int, world_size: int) -> DataLoader:
    """``loader`` (every batch of a validation or test split) cut to this process's share; itself for one process."""
    if world_size <= 1:
        return loader
    dataset = loader.dataset
    batches = evaluation_batches(list(loader.batch_sampler), rank, world_size, len(dataset))
    return DataLoader(
        PaddedDataset(dataset),
        batch_sampler=batches,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        persistent_workers=loader.num_workers > 0,
    )
