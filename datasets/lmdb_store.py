"""The files and environments of OC20-layout LMDBs: which files a path names, one shared read-only
environment per file and process, and the small stored values (``length``, a frame's pickle).

Both the frame reader (:mod:`.lmdb_dataset`) and the atom-count index (:mod:`.lmdb_index`) read
through this module, so neither imports the other's reader. The layout and the rules (no code from
the file, bounded memory) are described in :mod:`.lmdb_dataset`.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path

import lmdb

from equimol.safe_pickle import UnsafeFileError, restricted_loads

from .readers import DataFormatError

# equimol's per-frame atom-count index: little-endian int32 ``[length]``, beside "length" (fairchem's
# readers only read keys "0".."length-1", so the extra key is invisible to them); see lmdb_index.py.
ATOM_COUNT_KEY = b"equimol_natoms"


def lmdb_files(path: str | Path) -> list[Path]:
    """The LMDB files behind ``path`` (a ``.lmdb`` file, or a folder of them), in read order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"LMDB path {str(path)!r} does not exist")
    if path.is_dir():
        files = sorted(path.glob("*.lmdb"))
        if not files:
            raise DataFormatError(f"{path}: folder holds no *.lmdb files")
        return files
    return [path]


def _open(path: Path) -> lmdb.Environment:
    try:
        env = lmdb.open(
            str(path), subdir=False, readonly=True, lock=False, readahead=False, meminit=False, max_readers=256
        )
    except lmdb.Error as error:
        raise DataFormatError(f"{path}: not a readable LMDB file ({type(error).__name__}: {error})") from error
    # A truncated file still opens (its meta pages are at the start) but reading past its end would
    # kill the process with SIGBUS, so compare the pages LMDB expects with the bytes on disk.
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = path.stat().st_size
    if size < needed:
        env.close()
        raise DataFormatError(f"{path}: corrupt LMDB, file has {size} bytes but its pages need {needed}")
    return env


# LMDB forbids opening one file twice in a process, so every reader of a file in this process shares
# one read-only environment. A forked DataLoader worker inherits the parent's environments (and
# py-lmdb's record that they are open): it closes them and opens its own.
_ENVIRONMENTS: dict[tuple[str, int, int], lmdb.Environment] = {}
_ENVIRONMENTS_PID = os.getpid()


def _file_identity(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_dev, stat.st_ino


def shared_environment(path: Path) -> lmdb.Environment:
    """This process's read-only environment of the LMDB file ``path``, opened on first use."""
    global _ENVIRONMENTS_PID
    if _ENVIRONMENTS_PID != os.getpid():
        for inherited in _ENVIRONMENTS.values():
            inherited.close()
        _ENVIRONMENTS.clear()
        _ENVIRONMENTS_PID = os.getpid()
    identity = _file_identity(path)
    if identity not in _ENVIRONMENTS:
        _ENVIRONMENTS[identity] = _open(path)
    return _ENVIRONMENTS[identity]


def close_environment(path: Path) -> None:
    """Close this process's environment of ``path`` (readers reopen it on their next access)."""
    env = _ENVIRONMENTS.pop(_file_identity(path), None) if path.exists() else None
    if env is not None:
        env.close()


def frame_count(env: lmdb.Environment, path: Path) -> int:
    with env.begin() as txn:
        raw = txn.get(b"length")
        if raw is None:
            return int(env.stat()["entries"]) - (txn.get(ATOM_COUNT_KEY) is not None)
        return stored_length(raw, path)


def stored_length(raw: bytes, path: Path) -> int:
    """The frame count pickled under the key ``length`` (an int, or a numpy integer in some fairchem sets)."""
    value = unpickle_value(raw, f"{path}, key length")
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise DataFormatError(f"{path}: corrupt 'length' key (holds {str(value)[:80]!r}, not a frame count)")
    return int(value)


def unpickle_value(raw: bytes, where: str) -> object:
    """A stored value, unpickled with only the classes of the layout importable (see the module docstring).

    Raises:
        UnsafeFileError: the value names anything else (nothing of it has run).
        DataFormatError: a damaged pickle.
    """
    try:
        return restricted_loads(raw, where)
    except UnsafeFileError:
        raise
    except Exception as error:
        raise DataFormatError(f"{where}: value cannot be unpickled ({type(error).__name__}: {error})") from error
