"""The interface every data format implements: a :class:`FrameSource` is the frames of one data path.

A source is a sequence of **frame records** (the layout of :mod:`equimol.datasets.readers`):

===================  ==========================================================================
``len(source)``      number of frames
``source[i]``        frame record ``i`` (``0 <= i < len(source)``)
``atom_counts()``    ``[len(source)]`` int32 atoms per frame; formats with an index answer
                     without reading frames
``files``            every file the source reads (cache fingerprints)
``records()``        the records in order, streamed where the format allows (one frame in memory)
``frames()``         ``(atoms, record)`` pairs in order: the ASE frame as read (labels, ``info``
                     and ``arrays`` kept) where the format has one, else rebuilt from the record
===================  ==========================================================================

A format is one subclass: :meth:`FrameSource.accepts` says whether a path is in that format, the
constructor opens it (cheaply: a source reads its frames on first use, not when opened), and
``__len__``/``__getitem__`` give the records. :func:`equimol.datasets.sources.open_source` asks the
formats of :data:`equimol.datasets.sources.FORMATS` in order and opens the path with the first that
accepts it; the dataset, ``equimol predict``, ``equimol data convert/stats`` and ``equimol eval`` all
read through it.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
from torch_geometric.data import Data

from .readers import DEFAULT_KEYS, LabelKeys


class FrameSource(abc.ABC):
    """The frames of one data path (see the module docstring).

    Attributes:
        name: the format's name (error messages, ``CONTRIBUTING.md``).
        path: the path the source was opened with.
        keys: which labels are read, and which are required.
        files: every file the source reads.
    """

    name: ClassVar[str] = "abstract"

    def __init__(self, path: str | Path, keys: LabelKeys = DEFAULT_KEYS) -> None:
        self.path = Path(path)
        self.keys = keys
        self.files: list[Path] = [self.path]

    @classmethod
    @abc.abstractmethod
    def accepts(cls, path: Path) -> bool:
        """Whether ``path`` (which exists) is in this format; decided from names and sizes, without parsing."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> Data: ...

    def atom_counts(self) -> np.ndarray:
        """``[len(self)]`` int32 atoms per frame (this default reads every record)."""
        return np.fromiter((self[i].pos.shape[0] for i in range(len(self))), dtype=np.int32, count=len(self))

    def records(self) -> Iterator[Data]:
        """The frame records in order (this default reads them by index)."""
        for index in range(len(self)):
            yield self[index]

    def frames(self) -> Iterator[tuple[object, Data]]:
        """``(ase.Atoms, record)`` in order; this default rebuilds the frame from the record (:func:`record_atoms`)."""
        for record in self.records():
            yield record_atoms(record), record

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


def record_atoms(record: Data):
    """The ASE frame of a frame record: structure and labels (``energy``, ``forces``, ``stress`` in a
    ``SinglePointCalculator``; stress in ASE Voigt order)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    pbc = record.pbc.reshape(3).numpy() if "pbc" in record else [True, True, True]
    atoms = Atoms(
        numbers=record.atomic_numbers.numpy(),
        positions=record.pos.double().numpy(),
        cell=record.cell.reshape(3, 3).double().numpy(),
        pbc=pbc,
    )
    labels = {key: record[key] for key in ("energy", "forces", "stress") if key in record}
    labels = {key: value.double().numpy() if hasattr(value, "numpy") else value for key, value in labels.items()}
    if "stress" in labels:
        labels["stress"] = labels["stress"].reshape(3, 3)[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    if labels:
        atoms.calc = SinglePointCalculator(atoms, **labels)
    return atoms
