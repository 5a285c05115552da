"""``open_source(path)``: the one place that decides how a data path is read.

The formats of :data:`FORMATS` are asked in order; the first whose
:meth:`~equimol.datasets.frame_source.FrameSource.accepts` says yes opens the path:

- ``*.lmdb`` or a folder of them: :class:`~equimol.datasets.lmdb_dataset.LmdbFrames`, lazy (bounded memory);
- ``*.extxyz[.xz]`` with a companion ``*.txt[.xz]``, or a folder of such pairs: OC20 raw S2EF
  (:class:`~equimol.datasets.oc20_raw.Oc20RawFrames`);
- a plain ``*.xyz``/``*.extxyz`` of at least 256 MiB: :class:`~equimol.datasets.extxyz_index.ExtxyzFrames`,
  frames parsed on access through an index of byte offsets (12 bytes a frame);
- any other file :mod:`ase.io` reads (extxyz, traj, ASE db, json, ...):
  :class:`~equimol.datasets.ase_frames.AseFrames`, read into memory once.

A new format is one :class:`~equimol.datasets.frame_source.FrameSource` subclass, listed here before
the formats whose paths it would otherwise fall to (``CONTRIBUTING.md``, "Adding a dataset format").
"""

from __future__ import annotations

from pathlib import Path

from .ase_frames import AseFrames
from .extxyz_index import ExtxyzFrames
from .frame_source import FrameSource
from .lmdb_dataset import LmdbFrames
from .oc20_raw import Oc20RawFrames
from .readers import DEFAULT_KEYS, LabelKeys

#: The formats, in the order they are asked; :class:`AseFrames` takes any file, so it comes last.
FORMATS: tuple[type[FrameSource], ...] = (LmdbFrames, Oc20RawFrames, ExtxyzFrames, AseFrames)


def open_source(path: str | Path, keys: LabelKeys = DEFAULT_KEYS) -> FrameSource:
    """Open one data path with the first format of :data:`FORMATS` that accepts it.

    Opening is cheap: a source reads its frames when first asked (its length, a frame, or a stream).

    Raises:
        FileNotFoundError: ``path`` does not exist, or is a folder that no format reads.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data path {str(path)!r} does not exist")
    for source in FORMATS:
        if source.accepts(path):
            return source(path, keys)
    raise FileNotFoundError(f"{path}: folder holds neither *.lmdb nor *.extxyz[.xz] files")
