"""OC20 raw S2EF files: ``N.extxyz[.xz]`` frames paired with ``N.txt[.xz]`` system lines.

Line ``k`` of the text file describes frame ``k`` of the extxyz file as
``system_id,frame_number,reference_energy`` (e.g. ``random2181546,37,-159.51``). The reference is
the per-system energy that turns the frame's total DFT energy into an adsorption energy,

.. math:: E_{\\mathrm{ads}} = E_{\\mathrm{total}} - E_{\\mathrm{ref}}(\\text{system}),

applied later when the data are configured for adsorption energies
(:mod:`equimol.datasets.references`). The extxyz header carries ``move_mask`` (False = fixed atom)
and ``tags`` (0 sub-surface, 1 surface, 2 adsorbate) columns; ASE turns ``move_mask`` into a
``FixAtoms`` constraint, which the frame record keeps as ``fixed``.
"""

from __future__ import annotations

import lzma
from collections.abc import Iterator
from pathlib import Path

from torch_geometric.data import Data

from .frame_source import FrameSource
from .readers import DEFAULT_KEYS, DataFormatError, LabelKeys, iter_ase_records


def is_oc20_extxyz(path: str | Path) -> bool:
    """True for ``*.extxyz`` or ``*.extxyz.xz`` names (the OC20 raw S2EF frame files)."""
    name = Path(path).name
    return name.endswith(".extxyz") or name.endswith(".extxyz.xz")


def companion_txt(extxyz_path: str | Path) -> Path | None:
    """The ``N.txt`` or ``N.txt.xz`` file beside ``N.extxyz[.xz]``, or ``None`` when there is none."""
    path = Path(extxyz_path)
    stem = path.name.removesuffix(".xz").removesuffix(".extxyz")
    for name in (f"{stem}.txt", f"{stem}.txt.xz"):
        if (path.parent / name).exists():
            return path.parent / name
    return None


def read_system_lines(txt_path: str | Path) -> list[tuple[str, int, float]]:
    """Parse ``system_id,frame_number,reference_energy`` lines (LZMA-compressed when named ``.xz``)."""
    txt_path = Path(txt_path)
    if not txt_path.exists():
        raise FileNotFoundError(f"OC20 system file {str(txt_path)!r} does not exist")
    opener = lzma.open if txt_path.name.endswith(".xz") else open
    entries = []
    with opener(txt_path, "rt") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.strip().split(",")
            try:
                system_id, frame, reference = fields
                entries.append((system_id, int(frame), float(reference)))
            except ValueError as error:
                raise DataFormatError(
                    f"{txt_path}, line {line_number}: expected 'system_id,frame_number,reference_energy', "
                    f"got {line.strip()!r}"
                ) from error
    return entries


def iter_oc20_s2ef_records(
    extxyz_path: str | Path, txt_path: str | Path | None = None, keys: LabelKeys = DEFAULT_KEYS
) -> Iterator[Data]:
    """Stream frame records of one OC20 raw S2EF pair, with ``sid``, ``fid`` and ``reference_energy``.

    ``txt_path`` defaults to the companion text file; the two files must describe the same number
    of frames (an error names both files otherwise).
    """
    extxyz_path = Path(extxyz_path)
    if txt_path is None:
        txt_path = companion_txt(extxyz_path)
        if txt_path is None:
            raise FileNotFoundError(f"{extxyz_path}: no companion .txt or .txt.xz file with system ids beside it")
    systems = read_system_lines(txt_path)
    count = 0
    for frame, record in enumerate(iter_ase_records(extxyz_path, keys, format="extxyz")):
        if frame >= len(systems):
            raise DataFormatError(f"{extxyz_path}, frame {frame}: {txt_path} has only {len(systems)} lines")
        record.sid, record.fid, record.reference_energy = systems[frame]
        count += 1
        yield record
    if count != len(systems):
        raise DataFormatError(f"{extxyz_path} has {count} frames but {txt_path} has {len(systems)} lines")


class Oc20RawFrames(FrameSource):
    """OC20 raw S2EF frames: one ``N.extxyz[.xz]`` with its ``N.txt[.xz]``, or a folder of such pairs in name
    order; read whole on first use, streamed by :meth:`records` when nothing was read yet."""

    name = "oc20-raw"
    _records: list[Data] | None = None

    def __init__(self, path: str | Path, keys: LabelKeys = DEFAULT_KEYS) -> None:
        super().__init__(path, keys)
        self.pairs = sorted(p for p in self.path.iterdir() if is_oc20_extxyz(p)) if self.path.is_dir() else [self.path]
        self.files = [file for extxyz in self.pairs for file in (extxyz, companion_txt(extxyz)) if file is not None]

    @classmethod
    def accepts(cls, path: Path) -> bool:
        """An ``*.extxyz[.xz]`` file with its companion text file, or a folder holding ``*.extxyz[.xz]`` files."""
        if path.is_dir():
            return any(is_oc20_extxyz(p) for p in path.iterdir())
        return is_oc20_extxyz(path) and companion_txt(path) is not None

    def _loaded(self) -> list[Data]:
        if self._records is None:
            self._records = list(self.records())
        return self._records

    def __len__(self) -> int:
        return len(self._loaded())

    def __getitem__(self, index: int) -> Data:
        return self._loaded()[index]

    def records(self) -> Iterator[Data]:
        if self._records is not None:
            yield from self._records
            return
        for extxyz in self.pairs:
            yield from iter_oc20_s2ef_records(extxyz, keys=self.keys)
