"""Write a large **synthetic** OC20-layout LMDB for scale tests: rattled copies of the shipped OC20 frames.

SYNTHETIC SCALE TEST DATA, NOT A DATASET. Frame ``k`` is source frame ``k mod 2216`` of the 16
shipped OC20 DFT relaxation trajectories (``shared/data/oc20/dft_relaxation_trajs_2020``) with every
atom displaced by a seeded Gaussian of ``--rattle`` Å (default 0.02) per component. The energy and
forces are the source frame's, unchanged: they are **not** the labels of the rattled structure.
Use these files to measure I/O, memory and start-up time as the frame count grows, never accuracy.
Each record carries ``synthetic=True`` and ``sid="synthetic-<source sid>"`` so that nobody mistakes it
for OC20 data.

Pickling a torch-geometric ``Data`` costs about 1-2 ms a frame on the shared 2-core CPU (an hour
for 10^6 frames), so with ``--variants V`` (used for the committed figures, ``V = 10``) only
``V`` rattled copies of each source frame are pickled, and frame ``k`` stores the bytes of variant
``(k // 2216) mod V`` of source ``k mod 2216``: the stored values repeat every ``2216 V`` frames
(the ``fid`` too). Layout, value sizes and the page structure are those of distinct frames; LMDB
does not deduplicate. Without ``--variants`` every frame is rattled and pickled on its own, through
:func:`equimol.datasets.lmdb_dataset.write_lmdb` (the writer of ``equimol data convert``). Either
way the file has keys ``"0".."n-1"``, ``"length"`` and the atom-count index, and appears at its
name only once complete (temporary file, then rename).

Usage::

    nice -n 5 python benchmarks/scale_make_lmdb.py OUT.lmdb --frames 1000000 --variants 10
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from _common import SHARED_DATA
from torch_geometric.data import Data

SOURCE = SHARED_DATA / "oc20" / "dft_relaxation_trajs_2020"


def source_records(folder: Path = SOURCE) -> list[Data]:
    """The 2216 frame records of the shipped OC20 trajectories, in file order."""
    from equimol.datasets.readers import read_ase_records

    records = []
    for path in sorted(folder.glob("*.traj")):
        for frame, record in enumerate(read_ase_records(path)):
            record.sid, record.fid = f"synthetic-{path.stem}", frame
            records.append(record)
    return records


def rattled_frames(sources: list[Data], count: int, rattle: float, seed: int) -> Iterator[Data]:
    """``count`` records: source ``k mod len(sources)`` with positions rattled by ``N(0, rattle^2)`` Å."""
    rng = np.random.default_rng(seed)
    for k in range(count):
        record = sources[k % len(sources)].clone()
        noise = rng.normal(0.0, rattle, size=tuple(record.pos.shape))
        record.pos = record.pos + torch.from_numpy(noise)
        record.synthetic = True
        yield record


def write_variants(sources: list[Data], count: int, variants: int, rattle: float, seed: int, path: Path) -> int:
    """``count`` frames from ``variants`` pickled rattled copies of each source (see the module docstring)."""
    from equimol.datasets.lmdb_dataset import ATOM_COUNT_KEY, writing_lmdb

    pickled = [
        pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
        for record in rattled_frames(sources, len(sources) * variants, rattle, seed)
    ]
    atoms = np.array([int(record.pos.shape[0]) for record in sources], dtype="<i4")
    with writing_lmdb(path, map_size=count * 12_000 + (1 << 30)) as env:
        for start in range(0, count, 10_000):
            with env.begin(write=True) as txn:
                for k in range(start, min(count, start + 10_000)):
                    txn.put(str(k).encode("ascii"), pickled[k % len(pickled)])
        with env.begin(write=True) as txn:
            txn.put(b"length", pickle.dumps(count, protocol=pickle.HIGHEST_PROTOCOL))
            txn.put(ATOM_COUNT_KEY, atoms[np.arange(count) % len(sources)].tobytes())
    return count


def main(argv: list[str] | None = None) -> int:
    from equimol.datasets.lmdb_dataset import write_lmdb

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="output .lmdb (must not exist)")
    parser.add_argument("--frames", type=int, required=True, help="number of frames to write")
    parser.add_argument("--rattle", type=float, default=0.02, help="Gaussian displacement per component, Å")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", type=int, default=0, help="pickle this many rattled copies per source frame")
    args = parser.parse_args(argv)
    sources = source_records()
    start = time.perf_counter()
    if args.variants:
        count = write_variants(sources, args.frames, args.variants, args.rattle, args.seed, Path(args.output))
    else:
        count = write_lmdb(
            rattled_frames(sources, args.frames, args.rattle, args.seed),
            args.output,
            progress=sys.stderr.isatty(),
            total=args.frames,
        )
    seconds = time.perf_counter() - start
    size = Path(args.output).stat().st_size
    print(
        f"wrote {count} synthetic frames (rattled copies of {len(sources)} OC20 frames, variants "
        f"{args.variants or 'all distinct'}) to {args.output}: "
        f"{size / 2**30:.2f} GiB, {size / count:.0f} bytes/frame, {seconds:.1f} s ({count / seconds:.0f} frames/s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
