"""Two "nodes" x two processes on localhost (torchrun, gloo) step as one process with the same global batch.

Rank ``r``'s ``k``-th batch is global batch ``4k + r`` of batches of 2 (:func:`shard_batches`), i.e.
the four ranks' ``k``-th batches together are the ``k``-th batch of 8 of one process; DDP averages
the four gradients. Every frame of one OC20 trajectory has the same atoms (38, same fixed atoms), so
the mean of the ranks' per-batch losses is the one-process loss over the global batch, and after
``STEPS`` optimizer steps weights, EMA and Adam moments agree to float64 round-off: the gloo
all-reduce sums in another order than one process does, a relative difference of about 1e-16 per
step; ``rtol=1e-10`` leaves room for Adam to amplify it and still catches any other batch, one batch
too many or too few, or an unscaled gradient (each a relative change above 1e-3 here).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import ase.io
import torch
import yaml
from harness import run_together, tiny_model_section

STEPS = 3
FRAMES = 32  # 4 global batches of 8: training stops after STEPS, before the first validation


def _config(shared_data: Path, folder: Path, batch_size: int, num_nodes: int, devices: int) -> Path:
    frames = ase.io.read(shared_data / "oc20" / "dft_relaxation_trajs_2020" / "random1000120.traj", f":{FRAMES + 4}")
    ase.io.write(folder / "train.traj", frames[:FRAMES])
    ase.io.write(folder / "val.traj", frames[FRAMES:])
    config = {
        "model": tiny_model_section(["H", "C", "O", "Cu", "Au"], radial_cutoff=4.0, e0s=None),
        "data": {"train": str(folder / "train.traj"), "val": str(folder / "val.traj"), "batch_size": batch_size},
        "optimizer": {"lr": 0.01, "ema_decay": 0.9},
        "scheduler": {"name": "none"},
        "trainer": {
            "run_dir": str(folder / "run"),
            "max_steps": STEPS,
            "max_epochs": 5,
            "num_nodes": num_nodes,
            "devices": devices,
            "strategy": "ddp" if num_nodes * devices > 1 else "auto",
            "num_threads": 1,
            "progress_bar": False,
            "test_after_fit": False,
            "checkpoint_every_n_steps": STEPS,
        },
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _state(run: Path) -> dict:
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == STEPS
    state = {f"model/{k}": v for k, v in checkpoint["state_dict"].items()}
    for index, moments in checkpoint["optimizer_states"][0]["state"].items():
        state |= {f"adam/{index}/{name}": value for name, value in moments.items() if torch.is_tensor(value)}
    return state


def test_two_nodes_of_two_processes_match_one_process(shared_data: Path, tmp_path: Path) -> None:
    single, multi = tmp_path / "single", tmp_path / "multi"
    single.mkdir(), multi.mkdir()
    port = _free_port()
    equimol = str(Path(sys.executable).with_name("equimol"))
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    # both configs (and their data files) are written before any process starts: a data file rewritten
    # while a rank stats it changes the statistics cache key, and the machine's other rank then waits
    # for a cache file that never appears (how this test once hung in CI)
    multi_config = str(_config(shared_data, multi, batch_size=2, num_nodes=2, devices=2))
    reference = [equimol, "train", str(_config(shared_data, single, batch_size=8, num_nodes=1, devices=1))]
    nodes = [
        [
            str(Path(sys.executable).with_name("torchrun")),
            "--nnodes=2",
            "--nproc-per-node=2",
            f"--node-rank={rank}",
            "--master-addr=127.0.0.1",
            f"--master-port={port}",
            equimol,
            "train",
            multi_config,
        ]
        for rank in (0, 1)
    ]
    *launched, reference = run_together([*nodes, reference], tmp_path / "logs", environment)
    for result in [*launched, reference]:
        assert result.returncode == 0, result.stderr[-3000:]
    errors = [result.stderr for result in launched]
    reference_log = reference.stderr
    assert "GLOBAL_RANK: 3, MEMBER: 4/4" in errors[1]  # node 1 ran global ranks 2 and 3
    # the statistics sample and its standard errors, in the run's log and at the top of config.yaml
    written = (single / "run" / "config.yaml").read_text()
    assert written.startswith(f"# training-split statistics from a seeded sample of {FRAMES} of {FRAMES} structures")
    assert "avg_num_neighbors" in reference_log and "standard error 0" in reference_log
    assert yaml.safe_load(written)["trainer"]["num_nodes"] == 1
    one, four = _state(single / "run"), _state(multi / "run")
    assert one.keys() == four.keys()
    moved = [key for key in one if key.startswith("model/") and one[key].dtype == torch.float64]
    assert moved
    for key in one:
        torch.testing.assert_close(four[key], one[key], rtol=1e-10, atol=1e-14, msg=key)
