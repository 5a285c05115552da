"""Random access to a large plain-text extxyz file through the byte offsets of its frames.

An extxyz frame is an atom-count line :math:`n`, a comment line (lattice, properties, labels) and
:math:`n` atom lines. One streaming pass over the file (bytes, no parsing beyond the count lines)
records every frame's start offset and atom count, so a frame is read on demand by seeking to it
and parsing those :math:`n + 2` lines with ASE. Memory: 12 bytes a frame (an ``int64`` offset, an
``int32`` count) instead of the parsed frames. The index is cached beside the statistics
(``<cache_root()>/extxyz_index``), named by the file's path, size and modification time, and
written atomically; a changed file gets a new index.

:func:`~equimol.datasets.sources.open_source` uses this reader for plain extxyz files of at
least :data:`INDEXED_MIN_BYTES`; smaller files are read whole (every frame checked when opened).
Compressed (``.xz``) files and OC20 raw pairs cannot be sought in and are still read whole:
convert them with ``equimol data convert``.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from torch_geometric.data import Data

from equimol.utils.io import atomic_write, cache_root

from .frame_source import FrameSource
from .readers import DEFAULT_KEYS, DataFormatError, LabelKeys, atoms_to_record, iter_ase_frames

INDEXED_MIN_BYTES = 256 * 2**20
_SUFFIXES = {".xyz", ".extxyz"}


def is_plain_extxyz(path: Path) -> bool:
    """A ``.xyz``/``.extxyz`` file (not compressed), which :class:`ExtxyzFrames` can seek in."""
    return path.is_file() and path.suffix.lower() in _SUFFIXES


def scan_extxyz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``([frames + 1] int64 offsets, [frames] int32 atom counts)`` of ``path`` in one streaming pass."""
    offsets, counts = [], []
    position = 0
    with open(path, "rb") as handle:
        while True:
            line = handle.readline()
            if not line:
                break
            if not line.strip():  # trailing blank lines
                position += len(line)
                continue
            try:
                count = int(line)
            except ValueError:
                raise DataFormatError(
                    f"{path}, frame {len(counts)}: expected an atom-count line at byte {position}, got {line[:40]!r}"
                ) from None
            offsets.append(position)
            counts.append(count)
            position += len(line)
            for _ in range(count + 1):
                line = handle.readline()
                if not line:
                    raise DataFormatError(f"{path}, frame {len(counts) - 1}: file ends inside the frame")
                position += len(line)
    if not counts:
        raise DataFormatError(f"{path}: the file holds no frames")
    return np.asarray([*offsets, position], dtype=np.int64), np.asarray(counts, dtype=np.int32)


def _cached_scan(path: Path) -> tuple[np.ndarray, np.ndarray]:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    cached = cache_root() / "extxyz_index" / f"{key}.npz"
    if cached.exists():
        try:
            with np.load(cached) as stored:
                return stored["offsets"], stored["counts"]
        except (OSError, ValueError, KeyError):
            pass  # unreadable: scan again
    offsets, counts = scan_extxyz(path)
    try:
        with atomic_write(cached) as handle:
            np.savez(handle, offsets=offsets, counts=counts)
    except OSError:
        pass  # no writable cache: the scan is repeated next time
    return offsets, counts


class ExtxyzFrames(FrameSource):
    """Frames of one plain extxyz file of at least :data:`INDEXED_MIN_BYTES`, parsed on access (see the
    module docstring). The index is built on first use; :meth:`frames` streams without it."""

    name = "extxyz-indexed"

    def __init__(self, path: str | Path, keys: LabelKeys = DEFAULT_KEYS) -> None:
        super().__init__(path, keys)
        self._index: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def accepts(cls, path: Path) -> bool:
        return is_plain_extxyz(path) and path.stat().st_size >= INDEXED_MIN_BYTES

    def _offsets_counts(self) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            self._index = _cached_scan(self.path)
        return self._index

    def __len__(self) -> int:
        return int(self._offsets_counts()[1].shape[0])

    def atom_counts(self) -> np.ndarray:
        """``[len(self)]`` atoms per frame (from the index, no parsing)."""
        return self._offsets_counts()[1]

    def atoms(self, index: int):
        """Frame ``index`` as ASE reads it (labels, ``info`` and ``arrays`` kept)."""
        import ase.io

        if not 0 <= index < len(self):
            raise IndexError(f"{self.path}: frame {index} out of range [0, {len(self)})")
        offsets = self._offsets_counts()[0]
        start, end = int(offsets[index]), int(offsets[index + 1])
        with open(self.path, "rb") as handle:
            handle.seek(start)
            text = handle.read(end - start).decode()
        try:
            return ase.io.read(io.StringIO(text), format="extxyz", index=0)
        except Exception as error:  # ASE raises many types (XYZError, ValueError, IndexError, ...)
            raise DataFormatError(
                f"{self.path}, frame {index}: could not be read ({type(error).__name__}: {error})"
            ) from error

    def __getitem__(self, index: int) -> Data:
        return atoms_to_record(self.atoms(index), self.keys, str(self.path), index)

    def frames(self) -> Iterator[tuple[object, Data]]:
        """``(atoms as read, record)``, streamed in one pass (no index needed)."""
        return iter_ase_frames(self.path, self.keys, format="extxyz")

    def records(self) -> Iterator[Data]:
        for _, record in self.frames():
            yield record
