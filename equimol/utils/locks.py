"""Exclusive locks on run folders and output files, held for the life of a process and released when it dies.

:func:`exclusive_lock` takes an ``flock`` on a lock file: the kernel releases it when the process
ends, however it ends (an exception, ``kill -9``, a crash), so a lock never outlives its owner and
needs no clean-up (unlike a pid file). The lock file keeps one line naming the owner (pid, host,
command, start time), which a refused second process prints. ``equimol train`` holds
``run_dir/.equimol.lock`` while it trains; ``equimol predict`` holds ``.<out>.lock`` beside its output.

The owner removes the lock file when it is done (a killed owner leaves it, unlocked, for the next
one to take). A process that locked the file just as its owner removed it finds, after locking, that
the path no longer names its file, and starts again with the new one: two processes never both hold
the lock of one path.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from equimol.errors import EquimolInputError
from equimol.utils.io import output_error


class LockedError(EquimolInputError):
    """The folder or file is locked by another running process (the message names it and its owner)."""


def _owner() -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    command = " ".join(["equimol", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("equimol") else sys.argv[0]
    return f"pid {os.getpid()} on {socket.gethostname()}, started {started}: {command}"


@contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``path`` (created if needed, in an existing folder) for the block.

    Args:
        path: the lock file.
        what: what the lock protects, for the message (``"trainer.run_dir 'runs/x'"``).

    Raises:
        LockedError: another process holds it (the message names ``what`` and the owner's line).
        OutputError: the lock file cannot be created (a read-only folder).
    """
    path = Path(path)
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise output_error(path, error) from error
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(descriptor, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(descriptor)
            raise LockedError(
                f"{what} is in use by {owner}; wait for it to finish, or choose another name "
                f"(the lock goes when that process ends: {path})"
            ) from None
        if _names(path, descriptor):
            break
        os.close(descriptor)  # the owner removed the file after we opened it: lock the new one
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (_owner() + "\n").encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # still locked: a process waiting on this file will find it gone
        os.close(descriptor)


def _names(path: Path, descriptor: int) -> bool:
    """Whether ``path`` is still the file open as ``descriptor``."""
    try:
        named, held = os.stat(path), os.fstat(descriptor)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)
