"""Batch samplers: seeded shuffling, batches bounded by a number of structures or by an edge count.

A batch's memory in message passing grows with its number of edges, so
:class:`EdgeBudgetBatchSampler` fills each batch greedily, in (shuffled) order, while the sum of
edge counts stays :math:`\\le` ``max_edges`` (and the structure count :math:`\\le` ``max_structures``
when given). A structure that alone exceeds the budget is an error naming it, not a silent drop
or an oversized batch. Orders are ``numpy.random.default_rng([seed, epoch])`` permutations, so a
run is reproducible and each epoch differs. Each batch sampler keeps its order in ``.sampler``
(a :class:`SeededOrder`), where Lightning looks for ``set_epoch`` at every epoch; outside
Lightning call ``loader.batch_sampler.set_epoch(epoch)``.

**Lazy.** Batches are drawn one at a time from the epoch's order (a ``[size]`` integer array,
8 bytes a structure, the only per-epoch state); no epoch-long list of batches is built. In
distributed training :func:`shard_batches` hands each process its own batches as they come:
global batch :math:`g` goes to rank :math:`g \bmod W`, and a final group of fewer than :math:`W`
batches is dropped so that every process steps equally often. Rank :math:`r`'s :math:`k`-th
batch is global batch :math:`kW + r` whatever :math:`W`, which makes the union of the ranks'
:math:`k`-th batches the :math:`k`-th batch of one process whose batches are :math:`W` times as large.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from equimol.errors import EquimolInputError


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
        order = epoch_order(self.size, self.sampler.shuffle, self.sampler.seed, self.sampler.epoch)
        for start in range(0, self.size, self.batch_size):
            batch = order[start : start + self.batch_size].tolist()
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
            raise EquimolInputError(
                f"max_edges={max_edges} is smaller than {name}, which has {int(self.edge_counts[first])} edges "
                f"({too_big.size} structure(s) exceed it); raise max_edges to at least {int(self.edge_counts.max())}"
            )
        self.max_edges, self.max_structures = int(max_edges), max_structures
        self.sampler = SeededOrder(len(self.edge_counts), shuffle, seed)
        self._lengths: dict[int, int] = {}  # batches per epoch, counted once

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_order(len(self.edge_counts), self.sampler.shuffle, self.sampler.seed, self.sampler.epoch)
        cap = self.max_structures if self.max_structures is not None else len(order) + 1
        current: list[int] = []
        edges = 0
        chunk = 1 << 16  # numpy gathers per chunk: Python touches plain ints only
        for start in range(0, len(order), chunk):
            positions = order[start : start + chunk]
            for position, count in zip(positions.tolist(), self.edge_counts[positions].tolist()):
                if current and (edges + count > self.max_edges or len(current) >= cap):
                    yield current
                    current, edges = [], 0
                current.append(position)
                edges += count
        if current:
            yield current

    def __len__(self) -> int:
        epoch = self.sampler.epoch
        if epoch not in self._lengths:
            self._lengths[epoch] = sum(1 for _ in self)
        return self._lengths[epoch]


def shard_batches(batches: Iterable[list[int]], rank: int, world_size: int, skip: int = 0) -> Iterator[list[int]]:
    """Rank ``rank``'s batches of ``batches``, lazily: global batch ``g`` is rank ``g % world_size``'s.

    A last group of fewer than ``world_size`` batches is dropped (every rank steps equally often);
    the first ``skip`` of this rank's batches are passed over (a resumed epoch), without loading data.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    mine: list[int] | None = None
    taken = 0
    for number, batch in enumerate(batches):
        if number % world_size == rank:
            mine = batch
        if number % world_size == world_size - 1:  # the group is complete: this rank's batch may go
            if taken >= skip:
                yield list(mine)
            taken += 1


def sharded_length(num_batches: int, world_size: int) -> int:
    """Batches per rank of :func:`shard_batches` over ``num_batches`` global batches."""
    return num_batches // world_size
