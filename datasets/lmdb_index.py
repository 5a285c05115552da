"""The atom-count index of an LMDB: every frame's atom count in one value, read without touching the frames.

Size-bounded batching needs each frame's size before the first step. Unpickling every frame for it
costs about as much as a pass over the data (hours at OC20 S2EF-All size), so the count is stored
once, under the key ``equimol_natoms`` of each LMDB file: ``length`` little-endian ``int32``
values, frame ``k`` at offset ``4k``. ``equimol data convert`` writes it in the transaction that
writes ``length`` (:func:`~equimol.datasets.lmdb_dataset.write_lmdb`). An LMDB written by other
tools (fairchem's preprocessing) gets it once from :func:`index_lmdb` (``equimol data index PATH``),
which streams the frames with a cursor (one frame in memory) and then commits the index in one
write transaction: LMDB's commit is atomic, so a killed indexing run leaves the file as it was.
An LMDB without ``length`` gets that key too, so that fairchem's readers, which otherwise count
entries, still see the same frames.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import lmdb
import numpy as np

from .lmdb_store import (
    ATOM_COUNT_KEY,
    close_environment,
    lmdb_files,
    shared_environment,
    stored_length,
    unpickle_value,
)
from .readers import DataFormatError


def read_atom_counts(file: Path) -> np.ndarray:
    """``[frames]`` int32 atom counts of one LMDB file, from its index.

    Raises:
        DataFormatError: no index, or one whose size disagrees with the file's frame count.
    """
    env = shared_environment(file)
    with env.begin() as txn:
        raw = txn.get(ATOM_COUNT_KEY)
        length = txn.get(b"length")
        frames = stored_length(length, file) if length is not None else int(env.stat()["entries"]) - (raw is not None)
    if raw is None:
        raise DataFormatError(
            f"{file}: no atom-count index (key {ATOM_COUNT_KEY.decode()}); size-bounded batching of a large "
            f"LMDB needs it: run `equimol data index {file}` once (it streams the file)"
        )
    counts = np.frombuffer(raw, dtype="<i4").astype(np.int32)
    if counts.shape[0] != frames:
        raise DataFormatError(
            f"{file}: atom-count index holds {counts.shape[0]} entries for {frames} frames; "
            f"rebuild it with `equimol data index --force {file}`"
        )
    return counts


def _stored_atom_count(value: bytes, file: Path, key: bytes) -> int:
    record = unpickle_value(value, f"{file}, key {key.decode()}")
    fields = record if isinstance(record, dict) else getattr(record, "__dict__", {})
    if "_store" in fields:  # PyG 2 Data; PyG 1.x keeps the fields in __dict__ itself
        fields = record
    for name in ("pos", "atomic_numbers"):
        value = fields[name] if name in fields else None
        if value is not None:
            return int(value.shape[0])
    raise DataFormatError(f"{file}, key {key.decode()}: frame has neither pos nor atomic_numbers")


def index_lmdb_file(file: Path, force: bool = False, progress: bool = True) -> int:
    """Add the atom-count index to one LMDB file (see the module docstring); returns its frame count.

    An existing, consistent index is kept unless ``force``.
    """
    from tqdm.auto import tqdm

    if not force:
        try:
            return int(read_atom_counts(file).shape[0])
        except DataFormatError:
            pass
    env = shared_environment(file)
    with env.begin() as txn:
        length = txn.get(b"length")
        frames = stored_length(length, file) if length is not None else int(env.stat()["entries"])
        frames -= length is None and txn.get(ATOM_COUNT_KEY) is not None
        counts = np.full(frames, -1, dtype="<i4")
        cursor = txn.cursor()
        for key, value in tqdm(cursor, total=frames, disable=not progress, unit="frame", desc=f"indexing {file.name}"):
            if not key.isdigit():
                continue  # "length", the index itself
            position = int(key)
            if position >= frames:
                raise DataFormatError(f"{file}: key {key.decode()} lies beyond the {frames} frames the file claims")
            counts[position] = _stored_atom_count(value, file, key)
    missing = np.flatnonzero(counts < 0)
    if missing.size:
        raise DataFormatError(f"{file}: key {int(missing[0])} missing ({missing.size} of {frames} frames absent)")
    close_environment(file)  # LMDB forbids a second environment of one file in a process
    lock = Path(f"{file}-lock")
    had_lock = lock.exists()
    try:
        writer = lmdb.open(str(file), subdir=False, map_size=file.stat().st_size + 2 * counts.nbytes + (1 << 24))
    except lmdb.Error as error:
        raise DataFormatError(f"{file}: cannot open for writing the index ({error}); is it read-only?") from error
    try:
        with writer.begin(write=True) as txn:  # one transaction: the index appears whole or not at all
            if length is None:
                txn.put(b"length", pickle.dumps(frames, protocol=pickle.HIGHEST_PROTOCOL))
            txn.put(ATOM_COUNT_KEY, counts.tobytes())
        writer.sync(True)
    finally:
        writer.close()
        if not had_lock:
            lock.unlink(missing_ok=True)
    return frames


def index_lmdb(path: str | Path, force: bool = False, progress: bool = True) -> int:
    """Index every LMDB file behind ``path`` (a file or a folder of ``*.lmdb``); returns the total frame count."""
    return sum(index_lmdb_file(file, force, progress) for file in lmdb_files(path))
