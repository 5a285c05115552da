"""Validation/test metrics over 1, 2 and 3 gloo processes equal one process's (issue case 9).

Three real processes (``tests/eval_sharding_worker.py``) share out 5, 4, 2 and 1 structures of 3BPA
(batches of 2 and 1): uneven shares, fewer batches than processes, and processes with no structure
of their own (padding of weight 0). Metrics are float64 sums, so they agree with one process up to
the order of summation: asserted to 1e-12 relative.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from equimol.train.eval_sharding import PaddedDataset, evaluation_batches
from harness import run_together
from test_train_e2e import write_tiny_frames

WORKER = Path(__file__).with_name("eval_sharding_worker.py")


def test_every_structure_once_and_no_process_without_a_batch() -> None:
    for batches in ([[0, 1], [2, 3], [4]], [[0, 1], [2, 3]], [[0, 1]], [[0]], [[0, 1, 2, 3, 4, 5, 6]]):
        items = sorted(index for batch in batches for index in batch)
        for world in range(1, 6):
            shares = [evaluation_batches(batches, rank, world, 7) for rank in range(world)]
            assert all(shares), (batches, world)
            real = sorted(i for share in shares for batch in share for i in batch if i < 7)
            assert real == items, (batches, world)
            padding = [i for share in shares for batch in share for i in batch if i >= 7]
            assert padding == [7] * (world - len(items)) if world > len(items) else not padding
    with pytest.raises(ValueError, match="rank 3"):
        evaluation_batches([[0]], 3, 3, 1)


def test_padding_has_weight_zero() -> None:
    from torch_geometric.data import Data

    base = [Data(pos=torch.zeros(1, 3)), Data(pos=torch.ones(1, 3))]
    padded = PaddedDataset(base)
    assert len(padded) == 4
    assert padded[1].eval_weight.item() == 1.0 and padded[3].eval_weight.item() == 0.0
    assert torch.equal(padded[3].pos, base[1].pos)


def test_sharded_metrics_equal_one_process(shared_data: Path, tmp_path: Path) -> None:
    data = write_tiny_frames(shared_data, tmp_path, 5)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    store, out = tmp_path / "store", tmp_path / "metrics.json"
    workers = run_together(
        [[sys.executable, str(WORKER), str(rank), str(store), str(data), str(out)] for rank in range(3)],
        tmp_path / "logs",
        env,
        timeout=300,
    )
    logs = "\n".join(worker.stdout[-2000:] + worker.stderr[-2000:] for worker in workers)
    assert all(worker.returncode == 0 for worker in workers), logs
    results = json.loads(out.read_text())
    assert len(results["sharded"]) == 4 * 3
    for key, values in results["sharded"].items():
        reference = results["reference"][key.rsplit("/", 1)[0]]
        assert values.keys() == reference.keys() and "forces_rmse" in values
        for name, value in values.items():
            assert value == pytest.approx(reference[name], rel=1e-12, abs=0), (key, name)
