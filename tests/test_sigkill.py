"""A process killed (SIGKILL) while equimol writes leaves no file that a later command reads as valid.

Each test runs the real CLI in a subprocess that kills itself with SIGKILL at the worst moment: inside
``os.replace``, when the new file is complete but not yet renamed over its target (every equimol writer
renames a finished temporary file, :func:`equimol.utils.io.atomic_write`). A later command must then see
no output (or the previous one) and say so, and a rerun must work. One slow test kills a real conversion
at an arbitrary moment instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train_e2e import write_tiny_config, write_tiny_frames

from equimol.models import build_model

# argv: <substring of the target path> <which matching rename kills> <equimol arguments...>
KILLED_AT_RENAME = """
import os, signal, sys
target, count = sys.argv[1], int(sys.argv[2])
real_replace, seen = os.replace, [0]
def replace(source, destination, *args, **kwargs):
    if target in str(destination):
        seen[0] += 1
        if seen[0] >= count:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(source, destination, *args, **kwargs)
os.replace = replace
from equimol.cli import main
sys.exit(main(sys.argv[3:]))
"""


def equimol(*args: str, cwd: Path, cache: Path, killed_at: tuple[str, int] | None = None, timeout: int = 600):
    """Run ``equimol ARGS`` (the console script), or, with ``killed_at=(target, n)``, the CLI in a process that
    SIGKILLs itself at the ``n``-th rename onto a path containing ``target``."""
    env = {**os.environ, "EQUIMOL_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    if killed_at is None:
        command = [str(Path(sys.executable).with_name("equimol")), *map(str, args)]
    else:
        command = [sys.executable, "-c", KILLED_AT_RENAME, killed_at[0], str(killed_at[1]), *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def visible(folder: Path) -> list[str]:
    """Names a reader could pick up (hidden temporary files excluded)."""
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))


def checkpoint_of_a_tiny_model(path: Path) -> Path:
    model = build_model(
        {"species": ["H", "C", "N", "O"], "channels": 4, "lmax": 1, "num_layers": 1, "avg_num_neighbors": 8.0}
    )
    state = {
        "state_dict": {f"model.{name}": tensor for name, tensor in model.state_dict().items()},
        "model_config": model.config.to_dict(),
        "epoch": 0,
        "global_step": 0,
    }
    torch.save(state, path)
    return path


def test_export_killed_before_the_rename_leaves_no_model_file(shared_data: Path, tmp_path: Path) -> None:
    checkpoint = checkpoint_of_a_tiny_model(tmp_path / "best.ckpt")
    data = write_tiny_frames(shared_data, tmp_path, 2)
    killed = equimol("export", checkpoint, "model.pt", cwd=tmp_path, cache=tmp_path, killed_at=("model.pt", 1))
    assert killed.returncode == -signal.SIGKILL
    assert visible(tmp_path) == ["best.ckpt", "tiny.xyz"]
    after = equimol("eval", "model.pt", data.name, cwd=tmp_path, cache=tmp_path)
    assert after.returncode == 2 and "model.pt" in after.stderr and "does not exist" in after.stderr
    again = equimol("export", checkpoint, "model.pt", cwd=tmp_path, cache=tmp_path)
    assert again.returncode == 0, again.stderr
    from equimol.export import load_model

    assert load_model(tmp_path / "model.pt").species == [1, 6, 7, 8]


def test_convert_killed_before_the_rename_leaves_no_dataset(shared_data: Path, tmp_path: Path) -> None:
    data = write_tiny_frames(shared_data, tmp_path, 5)
    killed = equimol("data", "convert", data, "out.lmdb", "--quiet", cwd=tmp_path, cache=tmp_path,
                     killed_at=("out.lmdb", 1))  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    assert visible(tmp_path) == ["tiny.xyz"]
    stats = equimol("data", "stats", "out.lmdb", "--quiet", cwd=tmp_path, cache=tmp_path)
    assert stats.returncode == 2 and "out.lmdb" in stats.stderr
    again = equimol("data", "convert", data, "out.lmdb", "--quiet", cwd=tmp_path, cache=tmp_path)
    assert again.returncode == 0 and "wrote 5 frames" in again.stdout, again.stderr


def test_statistics_cache_killed_before_the_rename_is_recomputed(shared_data: Path, tmp_path: Path) -> None:
    data = write_tiny_frames(shared_data, tmp_path, 5)
    reference = equimol("data", "stats", data, "--quiet", cwd=tmp_path, cache=tmp_path / "clean")
    assert reference.returncode == 0, reference.stderr
    for cached in (tmp_path / ".equimol_statistics").iterdir():
        cached.unlink()  # the clean run's cache beside the data: start the killed run from nothing
    killed = equimol("data", "stats", data, "--quiet", cwd=tmp_path, cache=tmp_path / "cache",
                     killed_at=(".equimol_statistics", 1))  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    assert visible(tmp_path / ".equimol_statistics") == []  # a hidden temporary file at most
    again = equimol("data", "stats", data, "--quiet", cwd=tmp_path, cache=tmp_path / "cache")
    assert again.returncode == 0 and again.stdout == reference.stdout, again.stderr


@pytest.mark.slow  # a real conversion of 1669 frames, killed while it writes (about 20 s)
def test_convert_killed_at_any_moment_leaves_no_dataset(shared_data: Path, tmp_path: Path) -> None:
    command = [str(Path(sys.executable).with_name("equimol")), "data", "convert", "--quiet"]
    process = subprocess.Popen([*command, str(shared_data / "3bpa" / "test_300K.xyz"), "out.lmdb"], cwd=tmp_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(tmp_path.glob(".out.lmdb.*.tmp")):
        time.sleep(0.01)
    time.sleep(0.5)  # some frames written
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert visible(tmp_path) == []


@pytest.mark.slow  # trains the tiny config in a subprocess (about 40 s on a shared 2-core CPU)
def test_train_killed_while_checkpointing_leaves_whole_files(shared_data: Path, tmp_path: Path) -> None:
    """Killed at the second rename of last.ckpt: the first last.ckpt and best.ckpt load, no model.pt exists,
    and ``--resume`` finishes the run."""
    config = write_tiny_config(shared_data, tmp_path)
    killed = equimol("train", config, cwd=tmp_path, cache=tmp_path, killed_at=("last.ckpt", 2))
    assert killed.returncode == -signal.SIGKILL
    run = tmp_path / "run"
    assert not (run / "model.pt").exists()
    for name in ("last.ckpt", "best.ckpt"):
        assert torch.load(run / "checkpoints" / name, weights_only=False)["global_step"] > 0
    evaluated = equimol("eval", run / "model.pt", config.with_name("tiny.xyz"), cwd=tmp_path, cache=tmp_path)
    assert evaluated.returncode == 2 and "model.pt" in evaluated.stderr
    resumed = equimol("train", config, "--resume", cwd=tmp_path, cache=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run / "model.pt").is_file()
