"""One process per machine draws the statistics sample; the other processes there read its cache file.

Under ``torchrun`` or SLURM every process of a run starts at once and asks for the same training
statistics (the same files, split, sample and settings, hence the same cache key). Without
coordination each of them reads the sample's 2000 frames, scattered over the file, and builds their
neighbor lists: 8 processes a node make 8 times the random reads of one, on the file system that
also serves the training data. Instead, the first process of each machine (``LOCAL_RANK`` 0, or
``SLURM_LOCALID`` 0 under ``srun``) computes and writes the cache (atomically: a reader never sees
half a file) and the others on that machine wait for that file. They look where the first process
writes, which is the same path on one machine. Across machines nothing is assumed: when the cache
folder is shared, a machine that starts later finds the file already written, and otherwise its
first process computes its own copy. A process waits at most :data:`WAIT_SECONDS`, then computes
the statistics itself, so a failed or slow first process costs time, never a hang.

Lightning's own launcher (``trainer.devices`` > 1 without ``torchrun``) starts the other processes
after the first has built its statistics, so they find the cache file at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

WAIT_SECONDS = 1800.0  # longest wait for the machine's first process before computing anyway
POLL_SECONDS = 0.2

T = TypeVar("T")


def environment_int(*names: str) -> int | None:
    """The first of the environment variables ``names`` that holds an integer, as an int; else ``None``."""
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().lstrip("-").isdigit():
            return int(value)
    return None


def waits_for_first_process() -> bool:
    """Whether this process is one of several of a distributed launch, but not the first on its machine.

    True when the launch has more than one process (``WORLD_SIZE`` or ``SLURM_NTASKS`` > 1) and this
    one's machine-local rank (``LOCAL_RANK``, else ``SLURM_LOCALID``) is above 0.
    """
    world = environment_int("WORLD_SIZE", "SLURM_NTASKS")
    local = environment_int("LOCAL_RANK", "SLURM_LOCALID")
    return world is not None and world > 1 and local is not None and local > 0


def wait_for_file(
    paths: Sequence[Path], read: Callable[[str], T], timeout: float | None = None, poll: float = POLL_SECONDS
) -> T | None:
    """The first of ``paths`` that exists and ``read`` accepts, parsed; ``None`` after ``timeout`` seconds.

    Args:
        paths: where the file may appear, in order.
        read: parses the text; a ``ValueError``, ``TypeError`` or ``KeyError`` counts as not there yet.
        timeout: seconds to wait (:data:`WAIT_SECONDS` when ``None``).
        poll: seconds between looks.
    """
    deadline = time.monotonic() + (WAIT_SECONDS if timeout is None else timeout)
    while True:
        for path in paths:
            try:
                return read(path.read_text())
            except (OSError, ValueError, TypeError, KeyError):
                continue
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll)
