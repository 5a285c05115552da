"""Files that are either whole or absent, and where equimol keeps its caches.

:func:`atomic_write` is the one way equimol writes a file a later command reads (checkpoints,
model files, statistics and CP-factor caches, converted datasets, metrics): the content goes to a
temporary file beside the target, is flushed and ``fsync``-ed, and only then renamed over the
target with ``os.replace``, which POSIX makes atomic within one file system. A process killed at
any moment leaves either the old file, the new file, or no file, plus at most a hidden
``.<name>.<pid>.<random>.tmp`` that no reader looks at. The temporary file is created with the
process umask (unlike ``tempfile.mkstemp``'s 0600), so a model file is as readable as before.

A write that fails (a full disk, a read-only folder, a file-size limit) raises :class:`OutputError`,
which names the target and says that nothing was written; the temporary file is removed. Temporary
files left by a killed process (its pid no longer running) are removed by the next write of the same
target.

:func:`check_output` is the one rule for a command's output path: never one of its inputs, never a
folder, and an existing file only with ``--overwrite``.

:func:`cache_root` is the one cache-folder rule: ``$EQUIMOL_CACHE_DIR``, else
``$XDG_CACHE_HOME/equimol``, else ``~/.cache/equimol``.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from equimol.errors import EquimolInputError

# what a failed write reports: no space, over quota, over a file-size limit, read-only file system, no permission,
# an I/O error, a folder where the file should be
WRITE_ERRNOS = frozenset(
    (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EISDIR)
)


class OutputError(OSError):
    """A file that could not be written (full disk, read-only folder, ...); the message names it."""


def _same_file(first: Path, second: Path) -> bool:
    try:
        return first.exists() and second.exists() and os.path.samefile(first, second)
    except OSError:
        return False


def check_output(
    path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), overwrite: bool = False, flag: str = "output"
) -> Path:
    """Refuse an output ``path`` that is one of ``inputs``, a folder, or an existing file without ``overwrite``.

    Args:
        path: the output file.
        inputs: the command's input files (a file reached through a link or another spelling counts).
        overwrite: ``--overwrite`` was given.
        flag: how the command line names the output, for the message (``--out``, ``--json``, ``OUT``).

    Raises:
        FileExistsError, IsADirectoryError, ValueError: one line naming the path and what to do.
    """
    path = Path(path)
    for source in inputs:
        source = Path(source)
        if path.resolve() == source.resolve() or _same_file(path, source):
            raise EquimolInputError(f"{flag} {str(path)!r} is also an input of the command; write to another file")
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {str(path)!r} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{flag} {str(path)!r} exists; give --overwrite to replace it, or another name")
    return path


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


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Remove the temporary siblings of ``path`` (:func:`temporary_sibling`) whose writing process has ended."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]+\.tmp(-lock)?")
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return
    for sibling in siblings:
        match = pattern.fullmatch(sibling.name)
        if match and not _running(int(match.group(1))):
            sibling.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def output_error(path: str | os.PathLike, error: OSError) -> OutputError:
    """The :class:`OutputError` for a failed write of ``path`` (its cause's ``strerror`` included)."""
    reason = error.strerror or str(error) or type(error).__name__
    failure = OutputError(f"cannot write {str(path)!r}: {reason}; nothing was written there")
    failure.errno = error.errno  # after construction: the message stays the text above
    return failure


def write_files(contents: dict[str | os.PathLike, bytes]) -> None:
    """Write several files, all or none: every temporary is written and synced first, then each is renamed.

    A failed write (a full disk, a read-only folder) removes every temporary and leaves every target as it was.

    Raises:
        OutputError: naming the file that could not be written.
    """
    written: list[tuple[Path, Path]] = []
    try:
        for target, data in contents.items():
            target = Path(target)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = temporary_sibling(target)
                written.append((partial, target))
                with open(partial, "xb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as error:
                raise output_error(target, error) from error
    except BaseException:
        for partial, _ in written:
            partial.unlink(missing_ok=True)
        raise
    for partial, target in written:
        os.replace(partial, target)
        fsync_folder(target.parent)


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
        OutputError: the folder cannot be created or written, or the disk is full (naming ``path``).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise output_error(path, error) from error
    remove_stale_temporaries(path)
    partial = temporary_sibling(path)
    text = mode == "w"
    try:
        with open(partial, "x" if text else "xb", encoding=(encoding or "utf-8") if text else None) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except OutputError:
        partial.unlink(missing_ok=True)
        raise
    except OSError as error:
        partial.unlink(missing_ok=True)
        if error.errno in WRITE_ERRNOS:  # a full disk, a read-only folder, a target that is a folder
            raise output_error(path, error) from error
        raise
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
