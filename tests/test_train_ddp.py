"""DDP through Lightning on the CPU: two processes with gloo train the tiny config to the end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from test_train_e2e import write_tiny_config


def test_two_process_cpu_ddp_run_completes(shared_data: Path, tmp_path: Path) -> None:
    config = write_tiny_config(shared_data, tmp_path)
    result = subprocess.run(
        [
            # the console script: Lightning starts the second process by re-running this command line
            str(Path(sys.executable).with_name("equimol")),
            "train",
            str(config),
            "trainer.devices=2",
            "trainer.strategy=ddp",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    # 8 training batches per epoch shared by 2 processes: 4 synchronized steps per epoch, 2 epochs
    assert checkpoint["global_step"] == 8
    assert checkpoint["epoch"] == 1
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr
    metrics = json.loads((run / "test_metrics.json").read_text())["metrics"]
    assert metrics["forces_rmse"] > 0
