"""LMDB readers unmap their files every ``release_every`` frames: the pages a process holds stay bounded.

A memory-mapped LMDB keeps every page it has read in the process's resident set until the mapping
goes. The statistics sample (2000 frames scattered over the file) and a shuffled epoch would
otherwise grow it towards the file size. Measured through ``/proc/self/smaps`` (Linux), on a file in
the page cache, which is the worst case: there the kernel also maps the cached neighbours of each
page read.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import lmdb
import numpy as np
import pytest
from equimol.datasets.lmdb_dataset import LmdbFrames

pytestmark = pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")

FRAMES = 1200  # 48 MB: large against what one read can map (a 2 MiB folio of the page cache)
VALUE_BYTES = 40_000  # about 10 pages a frame, like a 10^3-atom structure


def _write(path: Path) -> Path:
    env = lmdb.open(str(path), subdir=False, map_size=1 << 27)
    with env.begin(write=True) as txn:
        for k in range(FRAMES):
            txn.put(str(k).encode(), pickle.dumps(bytes([k % 251]) * VALUE_BYTES))
        txn.put(b"length", pickle.dumps(FRAMES))
    env.close()
    Path(f"{path}-lock").unlink(missing_ok=True)
    return path


def _mapped_kib(path: Path) -> int | None:
    """Resident KiB of this process's mappings of ``path``; ``None`` when the file is not mapped at all."""
    target, total, inside, found = str(path.resolve()), 0, False, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
            inside = len(fields) >= 6 and fields[-1] == target
            found |= inside
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total if found else None


@pytest.fixture()
def lmdb_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "frames.lmdb")


def test_every_release_every_th_read_unmaps_the_file(lmdb_file: Path) -> None:
    frames = LmdbFrames(lmdb_file, release_every=8)
    for k in range(7):
        assert frames.raw(k) == bytes([k % 251]) * VALUE_BYTES
    assert _mapped_kib(lmdb_file) >= 7 * VALUE_BYTES // 1024  # the values read are resident
    frames.raw(7)
    assert _mapped_kib(lmdb_file) is None  # the 8th read closed the environment: nothing mapped
    assert frames.raw(8) == bytes([8]) * VALUE_BYTES  # and the next read reopens it
    assert _mapped_kib(lmdb_file) is not None
    frames.close()


def test_scattered_reads_hold_a_bounded_number_of_pages(lmdb_file: Path) -> None:
    order = np.random.default_rng(0).permutation(FRAMES)[:400].tolist()
    unbounded = LmdbFrames(lmdb_file, release_every=None)
    for k in order:
        unbounded.raw(k)
    held = _mapped_kib(lmdb_file)
    unbounded.close()
    assert held >= len(order) * VALUE_BYTES // 1024  # every value read stays mapped

    bounded, peak = LmdbFrames(lmdb_file, release_every=2), 0
    for number, k in enumerate(order):
        bounded.raw(k)
        if number % 10 == 0:  # one read before a release: the most that is mapped (every 5th, for speed)
            peak = max(peak, _mapped_kib(lmdb_file))
    bounded.close()
    assert peak < held / 4, (peak, held)


def test_release_every_is_checked(lmdb_file: Path) -> None:
    with pytest.raises(ValueError, match="release_every"):
        LmdbFrames(lmdb_file, release_every=0)
