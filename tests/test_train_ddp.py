"""DDP through Lightning on the CPU: two processes with gloo train the tiny config to the end."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
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
    # The validation metrics logged by rank 0 are those of the whole split (each process evaluated half of it
    # and the sums were added): one process evaluating the same EMA weights on the same split gets them too.
    # Lightning logs float32 values, hence 1e-5 relative; one process's half differs by far more.
    logged = _last_validation(run)
    from equimol.train.checkpoints import export_checkpoint
    from equimol.train.config import load_config
    from equimol.train.evaluate import evaluate
    from equimol.train.sharding import ShardedAtomsDataModule

    from equimol.export import load_model

    datamodule = ShardedAtomsDataModule.from_config(load_config(config).data)
    datamodule.setup("fit")
    model = load_model(export_checkpoint(run / "checkpoints" / "last.ckpt", tmp_path / "last.pt"))
    references = datamodule.element_references
    report = evaluate(model, datamodule.val_dataloader(), references=references.as_dict(), progress=False)
    for name in ("energy_rmse", "energy_per_atom_mae", "forces_rmse", "forces_mae"):
        assert logged[f"val/{name}"] == pytest.approx(report.metrics[name], rel=1e-5), name


def _last_validation(run: Path) -> dict[str, float]:
    """The last row of the CSV log that holds validation metrics."""
    [log] = (run / "csv").glob("version_*/metrics.csv")
    rows = [row for row in csv.DictReader(log.open()) if row.get("val/forces_rmse")]
    return {key: float(value) for key, value in rows[-1].items() if key.startswith("val/") and value}
