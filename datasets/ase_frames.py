"""Any file :mod:`ase.io` reads (extxyz, traj, ASE db, json, ...) as a frame source, read whole on first use.

The catch-all format of :func:`~equimol.datasets.sources.open_source`: every frame is parsed and
checked (:func:`~equimol.datasets.readers.atoms_to_record`) the first time the source is asked for its
length or a frame, and kept in memory. :meth:`AseFrames.records` and :meth:`AseFrames.frames` stream
instead when nothing was read yet (one frame in memory), which is what ``equimol data convert`` and
``equimol predict`` use. Convert large files to LMDB with ``equimol data convert``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from torch_geometric.data import Data

from .frame_source import FrameSource
from .readers import iter_ase_frames, read_ase_records


class AseFrames(FrameSource):
    """The frames of one ASE-readable file (see the module docstring)."""

    name = "ase"
    _records: list[Data] | None = None

    @classmethod
    def accepts(cls, path: Path) -> bool:
        """Any file: ASE guesses the format from the name and contents, and says when it cannot."""
        return path.is_file()

    def _loaded(self) -> list[Data]:
        if self._records is None:
            self._records = read_ase_records(self.path, self.keys)
        return self._records

    def __len__(self) -> int:
        return len(self._loaded())

    def __getitem__(self, index: int) -> Data:
        return self._loaded()[index]

    def frames(self) -> Iterator[tuple[object, Data]]:
        """``(atoms as read, record)``, streamed from the file."""
        return iter_ase_frames(self.path, self.keys)

    def records(self) -> Iterator[Data]:
        if self._records is not None:
            yield from self._records
            return
        for _, record in self.frames():
            yield record
