"""Indexed extxyz reading: frames parsed on access equal the frames read whole; errors name the file and frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from equimol.datasets import extxyz_index
from equimol.datasets.ase_frames import AseFrames
from equimol.datasets.atoms_dataset import AtomsDataset, LabelSettings
from equimol.datasets.extxyz_index import ExtxyzFrames, scan_extxyz
from equimol.datasets.readers import DataFormatError, read_ase_records
from equimol.datasets.sources import open_source


def _subset(shared_data: Path, folder: Path, frames: int) -> Path:
    lines = (shared_data / "3bpa" / "train_300K.xyz").read_text().splitlines(keepends=True)
    path = folder / "subset.xyz"
    path.write_text("".join(lines[: 29 * frames]))
    return path


def test_indexed_frames_equal_frames_read_whole(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    path = _subset(shared_data, tmp_path, 12)
    assert isinstance(open_source(path), AseFrames)  # small: read whole, as before
    monkeypatch.setattr(extxyz_index, "INDEXED_MIN_BYTES", 0)
    indexed = open_source(path)
    assert isinstance(indexed, ExtxyzFrames)
    whole = read_ase_records(path)
    assert len(indexed) == len(whole) == 12
    for index in (0, 5, 11, 7):
        record, expected = indexed[index], whole[index]
        assert sorted(record.keys()) == sorted(expected.keys())
        for key in ("pos", "cell", "forces", "atomic_numbers"):
            np.testing.assert_array_equal(record[key].numpy(), expected[key].numpy())
        assert record.energy == expected.energy and record.fid == expected.fid == index
    dataset = AtomsDataset([path], LabelSettings(radial_cutoff=5.0))
    np.testing.assert_array_equal(dataset.atom_counts(), np.full(12, 27))
    assert dataset[3].edge_index.shape[1] > 0


def test_scan_and_frame_errors_name_the_file_and_frame(shared_data: Path, tmp_path: Path) -> None:
    path = _subset(shared_data, tmp_path, 3)
    offsets, counts = scan_extxyz(path)
    assert counts.tolist() == [27, 27, 27] and offsets[-1] == path.stat().st_size
    text = path.read_text()
    (tmp_path / "cut.xyz").write_text(text[: offsets[2] + 200])
    with pytest.raises(DataFormatError, match=r"cut\.xyz, frame 2: file ends inside the frame"):
        scan_extxyz(tmp_path / "cut.xyz")
    lines = text.splitlines(keepends=True)
    lines[29 + 5] = "C 1.0 nonsense 2.0 0 0 0\n"  # frame 1, an atom line
    (tmp_path / "bad.xyz").write_text("".join(lines))
    frames = ExtxyzFrames(tmp_path / "bad.xyz")
    frames[0], frames[2]
    with pytest.raises(DataFormatError, match=r"bad\.xyz, frame 1: could not be read"):
        frames[1]
