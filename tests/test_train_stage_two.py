"""``loss.stage_two`` (MACE's ``--swa`` stage): after a fraction of the budget, new loss weights and a held lr.

A tiny run of 6 optimizer steps with ``budget_cosine`` (which changes the lr every step): stage two
starts at half the budget (step 3), so the last checkpoint records the stage and every parameter
group holds the stage's learning rate exactly (the scheduler stopped); the CSV log shows the
stage's force term weighting (``train_loss`` = 1000 E + 1 F there).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from equimol.train.config import load_config
from equimol.train.run import train
from test_train_e2e import write_tiny_config

STAGE = {"start": 0.5, "energy_weight": 1000.0, "forces_weight": 1.0, "lr": 0.0007}


def test_stage_two_switches_weights_and_holds_its_learning_rate(shared_data: Path, tmp_path: Path) -> None:
    path = write_tiny_config(shared_data, tmp_path, max_steps=6, test_after_fit=False, log_every_n_steps=1)
    config = load_config(path, ["scheduler.name=budget_cosine", f"loss.stage_two={STAGE}"])
    result = train(config)
    checkpoint = torch.load(Path(result["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["stage_two_active"] is True
    assert [group["lr"] for group in checkpoint["optimizer_states"][0]["param_groups"]] == [STAGE["lr"]]
    rows = []
    for log in Path(result["run_dir"]).glob("csv/version_*/metrics.csv"):
        rows += [row for row in csv.DictReader(log.open()) if row.get("train_loss")]
    by_step = {int(row["step"]): row for row in rows}
    assert set(by_step) == set(range(6))
    for step, row in by_step.items():
        energy, forces = float(row["train/energy_mse"]), float(row["train/forces_mse"])
        weights = (1000.0, 1.0) if step >= 3 else (1.0, 100.0)
        assert float(row["train_loss"]) == pytest.approx(weights[0] * energy + weights[1] * forces)
