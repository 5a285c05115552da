"""``scheduler.name: budget_cosine``: the learning rate anneals to ``min_lr`` exactly when the budget runs out.

The factor is checked against the closed form to 1e-12 (plain float arithmetic); the end-to-end run
checks that the optimizer's learning rate after the last of ``trainer.max_steps`` steps is ``min_lr``
(1e-12 relative), and halfway is the cosine midpoint, i.e. that progress is read from the trainer.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
import yaml
from equimol.train.budget_schedule import BudgetCosineLR
from equimol.train.config import load_config
from equimol.train.run import train
from test_train_e2e import tiny_config


def test_factor_follows_the_cosine_and_the_state_saves_without_the_callable() -> None:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=0.01)
    progress = [0.0]
    scheduler = BudgetCosineLR(optimizer, lambda: progress[0], floor=0.1)
    for value in (0.0, 0.25, 0.5, 1.0, 1.5):
        progress[0] = value
        optimizer.step()
        scheduler.step()
        clipped = min(value, 1.0)
        expected = 0.01 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * clipped)))
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12, abs=0)
    held = BudgetCosineLR(torch.optim.Adam([parameter], lr=0.01), lambda: progress[0], floor=0.1, start=0.6)
    for value, expected in ((0.3, 1.0), (0.6, 1.0), (0.8, 0.1 + 0.9 * 0.5), (1.0, 0.1)):
        progress[0] = value
        assert held.factor() == pytest.approx(expected, rel=1e-12, abs=0)
    state = scheduler.state_dict()
    assert "progress" not in state
    torch.save(state, io.BytesIO())  # a checkpoint can hold it


@pytest.mark.parametrize("steps", [2, 4])
def test_training_ends_at_min_lr_after_max_steps(shared_data: Path, tmp_path: Path, steps: int) -> None:
    config = tiny_config(shared_data, tmp_path, max_steps=steps, max_epochs=100, checkpoint_every_n_steps=1)
    config["scheduler"] = {"name": "budget_cosine", "min_lr": 0.0005}
    config["trainer"]["test_after_fit"] = False
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(config))
    train(load_config(path))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == steps
    assert state["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0005, rel=1e-12)
