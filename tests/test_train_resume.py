"""SIGKILL in the middle of an epoch, then ``equimol train --resume``: epoch, step, optimizer, scheduler and EMA
continue from the last checkpoint instead of starting again.

The run checkpoints after every optimizer step (``trainer.checkpoint_every_n_steps=1``); the test
kills it once a checkpoint from inside an epoch exists, resumes it, and compares the final state
with an uninterrupted run of the same config. Training is deterministic on the CPU (seeded
initialisation and batch order, float64), so the comparison is exact: weights, EMA, Adam moments,
scheduler state and the counters must be bitwise equal. A restart from scratch, a lost optimizer,
scheduler or EMA state, or a resumed epoch that replays or skips batches would each break it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from equimol.train.config import load_config
from equimol.train.run import train
from test_train_e2e import write_tiny_config

STEPS_PER_EPOCH = 8  # 16 training frames in batches of 2
MAX_EPOCHS = 3


def _equimol() -> list[str]:
    return [sys.executable, "-c", "import sys; from equimol.cli import main; sys.exit(main())"]


def _load(path: Path) -> dict | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (FileNotFoundError, RuntimeError, EOFError):
        return None


@pytest.mark.slow  # about 75 s on a shared 2-core CPU: three runs, two in subprocesses
def test_resume_after_sigkill_mid_epoch(shared_data: Path, tmp_path: Path) -> None:
    config = write_tiny_config(
        shared_data, tmp_path, max_epochs=MAX_EPOCHS, checkpoint_every_n_steps=1, early_stopping_patience=None
    )
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    log = (tmp_path / "killed.log").open("w")  # a file, not a pipe: nobody reads while it trains
    process = subprocess.Popen([*_equimol(), "train", str(config)], stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            state = _load(last) if last.exists() else None
            if state is not None and state["global_step"] > STEPS_PER_EPOCH and state["global_step"] % STEPS_PER_EPOCH:
                break  # a checkpoint from inside the second (or a later) epoch
            time.sleep(0.05)
        assert process.poll() is None, "training ended before it could be killed mid-epoch"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    killed = _load(last)
    assert killed is not None  # atomic writes: the last checkpoint is whole after SIGKILL
    step = killed["global_step"]
    assert 0 < step < MAX_EPOCHS * STEPS_PER_EPOCH

    result = subprocess.run(
        [*_equimol(), "train", str(config), "--resume"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final = _load(last)
    assert final["global_step"] == MAX_EPOCHS * STEPS_PER_EPOCH
    assert final["epoch"] == MAX_EPOCHS - 1
    assert final["ema"]["num_updates"] == MAX_EPOCHS * STEPS_PER_EPOCH

    reference_folder = tmp_path / "uninterrupted"
    reference_folder.mkdir()
    reference_config = write_tiny_config(
        shared_data,
        reference_folder,
        max_epochs=MAX_EPOCHS,
        checkpoint_every_n_steps=1,
        early_stopping_patience=None,
        test_after_fit=False,
    )
    train(load_config(reference_config))
    reference = _load(reference_folder / "run" / "checkpoints" / "last.ckpt")
    assert_same_training_state(final, reference)


def assert_same_training_state(resumed: dict, reference: dict) -> None:
    """Weights, EMA, optimizer and scheduler states and the counters of two checkpoints are bitwise equal."""
    assert resumed["global_step"] == reference["global_step"] and resumed["epoch"] == reference["epoch"]
    for key, where in (
        ("state_dict", "weights"),
        ("ema", "EMA"),
        ("optimizer_states", "optimizer"),
        ("lr_schedulers", "scheduler"),
    ):
        _assert_equal(resumed[key], reference[key], where)


def _assert_equal(resumed, reference, where: str) -> None:
    """Exact (bitwise) equality of nested checkpoint state."""
    if isinstance(reference, dict):
        assert set(resumed) == set(reference), where
        for key in reference:
            _assert_equal(resumed[key], reference[key], f"{where}.{key}")
    elif isinstance(reference, (list, tuple)):
        assert len(resumed) == len(reference), where
        for index, (a, b) in enumerate(zip(resumed, reference)):
            _assert_equal(a, b, f"{where}[{index}]")
    elif isinstance(reference, torch.Tensor):
        assert torch.equal(resumed, reference), where
    else:
        assert resumed == reference, where
