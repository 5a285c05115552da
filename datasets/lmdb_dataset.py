"""OC20/OC22 LMDBs: lazy reading of pickled torch-geometric ``Data`` frames; the writer of ``equimol data convert``.

**Layout** (fairchem's, so its published LMDBs read directly): an LMDB file (``subdir=False``) or a
folder of ``*.lmdb`` files, concatenated in name order. Keys are ASCII integers ``"0" .. "n-1"``
plus, in S2EF sets, ``"length"`` (a pickled int); values are ``pickle``d ``Data`` with ``pos``,
``cell`` ``[1, 3, 3]``, ``atomic_numbers``, ``natoms``, ``tags``, ``fixed``, ``sid``, ``fid`` and the
labels, named ``energy``/``forces`` (current fairchem) or ``y``/``force`` (legacy); IS2RE sets hold
``y_init``, ``y_relaxed`` and ``pos_relaxed``. equimol adds one key, ``equimol_natoms``: every
frame's atom count (:mod:`.lmdb_index`), for size-bounded batching without reading the frames.
Only ``lmdb``, ``torch`` and ``torch_geometric`` are needed to read them (not fairchem).

**No code from the file.** Values are unpickled by :func:`equimol.safe_pickle.restricted_loads`,
which resolves only the classes of this layout (PyG ``Data`` and its storage, torch tensors and
storages, numpy arrays, dtypes and scalars): a frame that names anything else is refused with
:class:`~equimol.safe_pickle.UnsafeFileError` naming the file, the key and the refused name,
before any of it runs.

**Bounded memory.** Environments open lazily, once per file and process (DataLoader workers fork
after the dataset is built; an LMDB environment must not cross a fork), read-only, without locks
or read-ahead. A frame is unpickled only when asked for, so iterating holds one batch in memory.
The file's pages are mapped, not copied, and a mapped page stays in the process's resident set
until the mapping goes, even though it is page cache that the kernel may drop: with the file cached,
each page fault also maps the cached neighbours of the page (fault-around, large folios). Left
alone, the resident set would grow with every distinct frame read, towards the file size. So
:class:`LmdbFrames` closes its environments, which unmaps them, after every ``release_every`` frames
it reads (:data:`RELEASE_EVERY`, 32): the process then holds the pages of at most that many frames,
whatever the file size (``tests/test_scale_mapping.py``). Reopening is cheap next to reading and
unpickling a frame.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import os
import pickle
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import lmdb
import numpy as np
import torch
from torch_geometric.data import Data

from equimol.utils.io import OutputError, fsync_folder, output_error, remove_stale_temporaries, temporary_sibling

from .frame_source import FrameSource
from .lmdb_index import read_atom_counts
from .lmdb_store import (
    ATOM_COUNT_KEY,
    close_environment,
    frame_count,
    lmdb_files,
    shared_environment,
    unpickle_value,
)
from .readers import DEFAULT_KEYS, DataFormatError, LabelKeys, validate_structure

_LEGACY_NAMES = {"energy": "y", "forces": "force"}
# Frames an LmdbFrames reads between two unmappings of its files (see "Bounded memory" above).
RELEASE_EVERY = 32
# Held while reading a value or closing environments: no thread unmaps a file another one reads.
_READ_LOCK = threading.Lock()


def _get(record: Data, name: str):
    return record[name] if name in record else None


def normalize_record(record: object, keys: LabelKeys, source: str, index: int) -> Data:
    """Bring a stored frame to the frame-record layout of :mod:`equimol.datasets.readers`.

    Maps legacy ``y``/``force`` to ``energy``/``forces`` (and ``keys.energy_key`` such as
    ``y_relaxed`` to ``energy``), rebuilds PyG-1.x pickles, and validates the structure.
    """
    if not isinstance(record, Data):
        raise DataFormatError(f"{source}, frame {index}: value is a {type(record).__name__}, expected a PyG Data")
    if "_store" not in record.__dict__:  # pickled under PyG 1.x: fields sit directly in __dict__
        record = Data(**{k: v for k, v in record.__dict__.items() if v is not None and not k.startswith("__")})
    pos = torch.as_tensor(_get(record, "pos"), dtype=torch.float64) if "pos" in record else None
    numbers = _get(record, "atomic_numbers")
    if pos is None or numbers is None or "cell" not in record:
        raise DataFormatError(
            f"{source}, frame {index}: needs pos, cell and atomic_numbers; keys present: {sorted(record.keys())}"
        )
    cell = torch.as_tensor(record.cell, dtype=torch.float64).reshape(1, 3, 3)
    validate_structure(pos.numpy(), cell.numpy(), source, index)
    n = pos.shape[0]
    out = Data(
        pos=pos,
        cell=cell,
        pbc=torch.as_tensor(record.pbc, dtype=torch.bool).reshape(1, 3)
        if "pbc" in record
        else torch.ones(1, 3, dtype=torch.bool),
        atomic_numbers=torch.as_tensor(numbers).long().reshape(n),
        natoms=n,
        tags=torch.as_tensor(record.tags).long().reshape(n) if "tags" in record else torch.zeros(n, dtype=torch.long),
        fixed=torch.as_tensor(record.fixed).bool().reshape(n)
        if "fixed" in record
        else torch.zeros(n, dtype=torch.bool),
        sid=_get(record, "sid"),
        fid=_get(record, "fid"),
    )
    for label, key, required in (
        ("energy", keys.energy_key, keys.require_energy),
        ("forces", keys.forces_key, keys.require_forces),
        ("stress", keys.stress_key, keys.require_stress),
    ):
        if key is None:
            continue
        value = _get(record, key)
        if value is None and key == label and label in _LEGACY_NAMES:
            value = _get(record, _LEGACY_NAMES[label])
        if value is None:
            if required:
                raise DataFormatError(
                    f"{source}, frame {index}: {label} key {key!r} not found; keys present: {sorted(record.keys())}"
                )
            continue
        value = torch.as_tensor(value, dtype=torch.float64)
        if label == "energy":
            out.energy = float(value.reshape(-1)[0])
        elif label == "forces":
            out.forces = value.reshape(n, 3)
        else:
            out.stress = value.reshape(3, 3)
    if "reference_energy" in record:
        out.reference_energy = float(torch.as_tensor(record.reference_energy).reshape(-1)[0])
    for key in ("y_init", "y_relaxed", "pos_relaxed"):
        if key in record and key != keys.energy_key:
            out[key] = record[key]
    return out


class LmdbFrames(FrameSource):
    """Random access to the frames of one LMDB path (a file or a folder of ``*.lmdb``), opened lazily.

    ``len(frames)`` is the number of frames; ``frames[i]`` the normalized frame record. After every
    ``release_every`` frames read (``None``: never), the environments of its files are closed, which
    unmaps their pages (see the module docstring); the next read reopens them.
    """

    name = "lmdb"

    def __init__(
        self, path: str | Path, keys: LabelKeys = DEFAULT_KEYS, release_every: int | None = RELEASE_EVERY
    ) -> None:
        if release_every is not None and release_every < 1:
            raise ValueError(f"release_every must be >= 1 or None, got {release_every}")
        super().__init__(path, keys)
        self.release_every, self._reads = release_every, 0
        self.files = lmdb_files(self.path)
        counts = [frame_count(shared_environment(file), file) for file in self.files]
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64).tolist()

    @classmethod
    def accepts(cls, path: Path) -> bool:
        """A ``*.lmdb`` file, or a folder holding some."""
        return path.suffix == ".lmdb" or (path.is_dir() and any(path.glob("*.lmdb")))

    def __len__(self) -> int:
        return self._offsets[-1]

    def raw(self, index: int) -> object:
        """The unpickled stored value of frame ``index`` (no normalization)."""
        if not 0 <= index < len(self):
            raise IndexError(f"{self.path}: frame {index} out of range [0, {len(self)})")
        file_index = bisect.bisect_right(self._offsets, index) - 1
        local = index - self._offsets[file_index]
        file = self.files[file_index]
        with _READ_LOCK:
            with shared_environment(file).begin() as txn:
                raw = txn.get(str(local).encode("ascii"))  # a copy: nothing points into the map afterwards
            self._reads += 1
            if self.release_every is not None and self._reads >= self.release_every:
                self._reads = 0
                self._close_files()
        if raw is None:
            raise DataFormatError(f"{file}: key {local!r} missing (frame {index}; the file claims {len(self)} frames)")
        return unpickle_value(raw, f"{file}, key {local}")

    def __getitem__(self, index: int) -> Data:
        file_index = bisect.bisect_right(self._offsets, index) - 1 if 0 <= index < len(self) else 0
        return normalize_record(self.raw(index), self.keys, str(self.files[file_index]), index)

    def atom_counts(self) -> np.ndarray:
        """``[len(self)]`` atoms per frame, from the files' atom-count index (see :mod:`.lmdb_index`).

        Raises:
            DataFormatError: a file has no index (written by ``equimol data convert``; add it to an
                existing LMDB once with ``equimol data index PATH``).
        """
        return np.concatenate([read_atom_counts(file) for file in self.files])

    def close(self) -> None:
        """Close the environments of this reader's files (shared by every reader of them in this process)."""
        with _READ_LOCK:
            self._close_files()

    def _close_files(self) -> None:
        for file in self.files:
            close_environment(file)


def write_lmdb(
    records: Iterable[Data],
    path: str | Path,
    legacy_names: bool = False,
    progress: bool = True,
    total: int | None = None,
    map_size: int = 1 << 30,
    overwrite: bool = False,
) -> int:
    """Write frame records to one LMDB file in the OC20 layout; returns the number of frames.

    Args:
        records: frame records (see :mod:`equimol.datasets.readers`), written in order as keys "0".."n-1".
        path: output file (must not exist unless ``overwrite``). The frames go to a hidden temporary
            file beside it, which is synced and renamed to ``path`` only once complete (the
            :mod:`equimol.utils.io` rule):
            a conversion that fails or is killed never leaves a file at ``path``. The atom-count
            index (``ATOM_COUNT_KEY``, :mod:`.lmdb_index`) is committed in the transaction of "length".
        legacy_names: store ``energy``/``forces`` as ``y``/``force`` (older OC20 LMDBs).
        progress: show a tqdm progress bar.
        total: number of records, for the progress bar.
        map_size: initial map size in bytes; doubled whenever it fills up.
    """
    from tqdm.auto import tqdm

    path = Path(path)
    count = 0
    atom_counts = array.array("i")  # the atom-count index, committed with "length"
    pending: list[tuple[bytes, bytes]] = []
    with writing_lmdb(path, map_size, overwrite) as env:
        for record in tqdm(records, total=total, disable=not progress, unit="frame", desc=f"writing {path.name}"):
            stored = record.clone()
            if legacy_names:
                for name, legacy in _LEGACY_NAMES.items():
                    if name in stored:
                        stored[legacy] = stored[name]
                        del stored[name]
            value = pickle.dumps(stored, protocol=pickle.HIGHEST_PROTOCOL)
            pending.append((str(count).encode("ascii"), value))
            atom_counts.append(int(stored.pos.shape[0]))
            count += 1
            if len(pending) >= 256:
                _put(env, pending)
                pending = []
        pending.append((b"length", pickle.dumps(count, protocol=pickle.HIGHEST_PROTOCOL)))
        pending.append((ATOM_COUNT_KEY, np.asarray(atom_counts, dtype="<i4").tobytes()))
        _put(env, pending)
    return count


@contextlib.contextmanager
def writing_lmdb(path: Path, map_size: int, overwrite: bool = False) -> Iterator[lmdb.Environment]:
    """An LMDB environment whose file becomes ``path`` only when the block ends without an error.

    It is opened on a hidden temporary sibling (the :mod:`equimol.utils.io` rule), synced once at
    the end (``sync=False`` meanwhile: one fsync instead of one per commit) and renamed onto
    ``path``; an error or a kill inside the block never leaves a file at ``path``.

    Raises:
        FileExistsError: ``path`` exists (and not ``overwrite``).
        OutputError: the folder is read-only or the disk full (nothing is left at ``path`` or beside it).
    """
    if path.exists() and not overwrite:
        raise FileExistsError(f"output {str(path)!r} exists; give --overwrite to replace it, or another name")
    partial = temporary_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        env = lmdb.open(str(partial), subdir=False, map_size=map_size, meminit=False, sync=False, lock=True)
    except (OSError, lmdb.Error) as error:
        for leftover in (partial, Path(f"{partial}-lock")):
            leftover.unlink(missing_ok=True)
        raise _write_failure(path, error) from error
    try:
        yield env
        env.sync(True)
    except lmdb.Error as error:  # ENOSPC and friends, as LMDB reports them (the block writes only through env)
        _discard(env, partial)
        raise _write_failure(path, error) from error
    except BaseException:
        _discard(env, partial)
        raise
    env.close()
    Path(f"{partial}-lock").unlink(missing_ok=True)
    os.replace(partial, path)
    fsync_folder(path.parent)


def _discard(env: lmdb.Environment, partial: Path) -> None:
    env.close()
    for leftover in (partial, Path(f"{partial}-lock")):
        leftover.unlink(missing_ok=True)


def _write_failure(path: Path, error: BaseException) -> BaseException:
    """An :class:`~equimol.utils.io.OutputError` naming ``path`` for a failed write; other errors unchanged."""
    if isinstance(error, OSError) and not isinstance(error, OutputError):
        return output_error(path, error)
    if isinstance(error, lmdb.Error):
        return output_error(path, OSError(str(error).rsplit(": ", 1)[-1]))
    return error


def _put(env: lmdb.Environment, items: list[tuple[bytes, bytes]]) -> None:
    """Commit ``items`` in one transaction, growing the map when it is full (the transaction is retried)."""
    while True:
        try:
            with env.begin(write=True) as txn:
                for key, value in items:
                    txn.put(key, value)
            return
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)
