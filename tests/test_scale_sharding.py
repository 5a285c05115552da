"""Lazy per-rank batches: each process draws only its own, the ranks' k-th batches make one process's k-th batch,
and a resumed epoch continues exactly where each rank stopped."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from equimol.datasets.samplers import EdgeBudgetBatchSampler, StructureBatchSampler, shard_batches, sharded_length


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_ranks_together_take_one_process_batches(world_size: int) -> None:
    size, per_rank = 103, 3
    one = StructureBatchSampler(size, per_rank * world_size, shuffle=True, seed=7)
    many = StructureBatchSampler(size, per_rank, shuffle=True, seed=7)
    for epoch in (0, 1):
        one.set_epoch(epoch), many.set_epoch(epoch)
        ranks = [list(shard_batches(many, rank, world_size)) for rank in range(world_size)]
        assert {len(batches) for batches in ranks} == {sharded_length(len(many), world_size)}
        for step, global_batch in enumerate(itertools.islice(one, len(ranks[0]))):
            assert [i for rank in ranks for i in rank[step]] == global_batch


def test_resumed_rank_continues_where_it_stopped() -> None:
    sampler = EdgeBudgetBatchSampler(np.random.default_rng(0).integers(10, 90, size=500), max_edges=400, seed=3)
    sampler.set_epoch(2)
    for rank in range(3):
        full = list(shard_batches(sampler, rank, 3))
        for done in (0, 1, 7, len(full)):
            assert list(shard_batches(sampler, rank, 3, skip=done)) == full[done:]


def test_batches_are_drawn_lazily() -> None:
    endless = ([k] for k in itertools.count())  # an epoch that never ends: only a lazy shard returns
    assert list(itertools.islice(shard_batches(endless, 1, 4), 3)) == [[1], [5], [9]]


def _greedy_reference(edge_counts: np.ndarray, order: np.ndarray, max_edges: int, cap: int | None) -> list[list[int]]:
    """The materialized packing this module used before it became lazy."""
    batches, current, edges = [], [], 0
    for position in order.tolist():
        count = int(edge_counts[position])
        if current and (edges + count > max_edges or (cap is not None and len(current) >= cap)):
            batches.append(current)
            current, edges = [], 0
        current.append(position)
        edges += count
    return batches + ([current] if current else [])


@pytest.mark.parametrize("cap", [None, 4])
def test_lazy_edge_budget_batches_equal_the_materialized_packing(cap: int | None) -> None:
    from equimol.datasets.samplers import epoch_order

    counts = np.random.default_rng(1).integers(5, 120, size=70_000)  # more than one 65,536-frame chunk
    sampler = EdgeBudgetBatchSampler(counts, max_edges=500, max_structures=cap, seed=11)
    sampler.set_epoch(1)
    expected = _greedy_reference(counts, epoch_order(len(counts), True, 11, 1), 500, cap)
    assert list(sampler) == expected
    assert len(sampler) == len(expected)
