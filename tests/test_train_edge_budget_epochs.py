"""Training with edge-budget batches (``data.max_edges``) validates after every epoch and runs every batch.

The number of edge-budget batches depends on each epoch's shuffled order. Lightning counted the
batches once (epoch 0) and validates at that count: an epoch with fewer batches was never validated
(so ``best.ckpt`` and the plateau scheduler saw epoch 0 only), and an epoch with more lost its last
batches. Data: 6 frames of each of two OC20 trajectories (49 atoms, about 530 edges; 97 atoms, about
3040 edges at 5 Å), with ``max_edges`` 3100 so that the first three epochs have 10, 11 and 8 batches.
"""

from __future__ import annotations

import csv
from pathlib import Path

import ase.io
import numpy as np
from equimol.datasets.samplers import EdgeBudgetBatchSampler
from equimol.train.config import validate_config
from equimol.train.run import train
from harness import tiny_model_section

TRAJECTORIES = "oc20/dft_relaxation_trajs_2020"
MAX_EDGES = 3100
EPOCHS = 3


def _config(shared_data: Path, folder: Path) -> dict:
    frames = []
    for name in ("random1000156", "random1000163"):
        frames += ase.io.read(shared_data / TRAJECTORIES / f"{name}.traj", ":6")
    ase.io.write(folder / "mixed.extxyz", frames)
    ase.io.write(folder / "val.extxyz", [frames[0], frames[-1]])
    return {
        "model": tiny_model_section(["H", "O", "Na", "Mo", "Rh", "Tl"], e0s=None),
        "data": {
            "data_dir": str(folder),
            "train": "mixed.extxyz",
            "val": "val.extxyz",
            "max_edges": MAX_EDGES,
            "eval_batch_size": 2,
        },
        "optimizer": {"lr": 0.005},
        "trainer": {
            "run_dir": str(folder / "run"),
            "max_epochs": EPOCHS,
            "progress_bar": False,
            "test_after_fit": False,
            "log_every_n_steps": 1,
            "num_threads": 1,
        },
    }


def test_every_epoch_is_validated_and_runs_all_its_batches(shared_data, tmp_path):
    from equimol.train.sharding import ShardedAtomsDataModule

    config = validate_config(_config(shared_data, tmp_path))
    datamodule = ShardedAtomsDataModule.from_config(config.data)
    datamodule.setup("fit")
    sampler = EdgeBudgetBatchSampler(datamodule.edge_counts("train"), MAX_EDGES, seed=datamodule.seed)
    lengths = []
    for epoch in range(EPOCHS):
        sampler.set_epoch(epoch)
        lengths.append(len(sampler))
    # the case that went wrong: a later epoch longer, and one shorter, than epoch 0
    assert max(lengths[1:]) > lengths[0] > min(lengths[1:]), lengths

    train(config)
    (log,) = (tmp_path / "run" / "csv").rglob("metrics.csv")
    rows = list(csv.DictReader(log.open()))
    validated = sorted(int(row["epoch"]) for row in rows if row.get("val_loss"))
    assert validated == list(range(EPOCHS))
    steps = [int(row["step"]) for row in rows if row.get("train_loss")]
    assert max(steps) + 1 == sum(lengths)  # log_every_n_steps 1: the last step of the last epoch
    assert np.all(np.diff(steps) > 0)
