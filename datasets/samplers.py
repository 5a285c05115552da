"""Batch samplers: seeded shuffling, batches bounded by a number of structures or by an edge count.

A batch's memory in message passing grows with its number of edges, so
:class:`EdgeBudgetBatchSampler` fills each batch greedily, in (shuffled) order, while the sum of
edge counts stays :math:`\\le` ``max_edges`` (and the structure count :math:`\\le` ``max_structures``
when given). A structure that alone exceeds the budget is an error naming it, not a silent drop
or an oversized batch. Orders are ``numpy.random.default_rng([seed, epoch])`` permutations, so a
run is reproducible and each epoch differs. Each batch sampler keeps its order in ``.sampler``
(a :class:`SeededOrder`), where Lightning looks for ``set_epoch`` at every epoch; outside
Lightning call ``loader.batch_sampler.set_epoch(epoch)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np


def epoch_order(size: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """``[size]`` positions in the order of epoch ``epoch``."""
    if not shuffle:
        return np.arange(size)
    return np.random.default_rng([seed, epoch]).permutation(size)


class SeededOrder:
    """Positions ``0 .. size-1`` in a seeded per-epoch order (identity order when not shuffling)."""

    def __init__(self, size: int, shuffle: bool, seed: int = 0) -> None:
        self.size, self.shuffle, self.seed, self.epoch = size, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(epoch_order(self.size, self.shuffle, self.seed, self.epoch).tolist())

    def __len__(self) -> int:
        return self.size


class StructureBatchSampler:
    """Batches of ``batch_size`` positions ``0 .. size-1`` (the last one may be smaller unless ``drop_last``)."""

    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.size, self.batch_size, self.drop_last = size, batch_size, drop_last
        self.sampler = SeededOrder(size, shuffle, seed)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(self.sampler)
        for start in range(0, self.size, self.batch_size):
            batch = order[start : start + self.batch_size]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __len__(self) -> int:
        return self.size // self.batch_size if self.drop_last else -(-self.size // self.batch_size)


class EdgeBudgetBatchSampler:
    """Batches of positions whose total edge count is at most ``max_edges``.

    Args:
        edge_counts: ``[size]`` edges of each structure (from the dataset statistics).
        max_edges: edge budget per batch.
        max_structures: optional cap on structures per batch.
        shuffle, seed: seeded order per epoch.
        describe: optional ``position -> description`` for the error on an oversized structure.
    """

    def __init__(
        self,
        edge_counts: Sequence[int],
        max_edges: int,
        max_structures: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        describe: Callable[[int], str] | None = None,
    ) -> None:
        self.edge_counts = np.asarray(edge_counts, dtype=np.int64)
        if max_edges < 1:
            raise ValueError(f"max_edges must be >= 1, got {max_edges}")
        too_big = np.flatnonzero(self.edge_counts > max_edges)
        if too_big.size:
            first = int(too_big[0])
            name = describe(first) if describe is not None else f"structure {first}"
            raise ValueError(
                f"max_edges={max_edges} is smaller than {name}, which has {int(self.edge_counts[first])} edges "
                f"({too_big.size} structure(s) exceed it); raise max_edges to at least {int(self.edge_counts.max())}"
            )
        self.max_edges, self.max_structures = int(max_edges), max_structures
        self.sampler = SeededOrder(len(self.edge_counts), shuffle, seed)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def _batches(self) -> list[list[int]]:
        batches: list[list[int]] = []
        current: list[int] = []
        edges = 0
        for position in self.sampler:
            count = int(self.edge_counts[position])
            full = self.max_structures is not None and len(current) >= self.max_structures
            if current and (edges + count > self.max_edges or full):
                batches.append(current)
                current, edges = [], 0
            current.append(position)
            edges += count
        if current:
            batches.append(current)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()

    def __len__(self) -> int:
        return len(self._batches())
