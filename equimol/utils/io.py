"""Files that are either whole or absent, and where equimol keeps its caches.

:func:`atomic_write` is the one way equimol writes a file a later command reads (checkpoints,
model files, statistics and CP-factor caches, converted datasets, metrics): the content goes to a
temporary file beside the target, is flushed and ``fsync``-ed, and only then renamed over the
target with ``os.replace``, which POSIX makes atomic within one file system. A process killed at
any moment leaves either the old file, the new file, or no file, plus at most a hidden
``.<name>.<pid>.<random>.tmp`` that no reader looks at. The temporary file is created with the
process umask (unlike ``tempfile.mkstemp``'s 0600), so a model file is as readable as before.

:func:`cache_root` is the one cache-folder rule: ``$EQUIMOL_CACHE_DIR``, else
``$XDG_CACHE_HOME/equimol``, else ``~/.cache/equimol``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def cache_root() -> Path:
    """equimol's cache folder: ``$EQUIMOL_CACHE_DIR``, else ``$XDG_CACHE_HOME/equimol``, else ``~/.cache/equimol``.

    Empty variables count as unset (as the XDG base-directory specification says).
    """
    if os.environ.get("EQUIMOL_CACHE_DIR"):
        return Path(os.environ["EQUIMOL_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "equimol"
    return Path.home() / ".cache" / "equimol"


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A fresh hidden name beside ``path`` (same folder, hence same file system): ``.<name>.<pid>.<hex>.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def fsync_folder(folder: str | os.PathLike) -> None:
    """``fsync`` a folder so that a rename inside it survives a power cut; a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename itself is still atomic
    finally:
        os.close(descriptor)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit, ``fsync`` it and rename it to ``path``.

    Usage::

        with atomic_write(path) as handle:            # bytes, e.g. torch.save(obj, handle)
            torch.save(payload, handle)
        with atomic_write(path, "w") as handle:       # text (UTF-8 unless ``encoding`` says otherwise)
            handle.write(text)

    Parent folders are created. If the block raises (or the process is interrupted), the temporary
    file is removed and ``path`` keeps its previous content, if any.

    Args:
        path: the target file.
        mode: ``"wb"`` (default) or ``"w"``.
        encoding: text encoding for ``mode="w"`` (default UTF-8).

    Raises:
        ValueError: a mode other than ``"wb"`` or ``"w"``.
        OSError: the folder cannot be created or written.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = temporary_sibling(path)
    text = mode == "w"
    try:
        with open(partial, "x" if text else "xb", encoding=(encoding or "utf-8") if text else None) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
