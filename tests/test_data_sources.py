"""Frame sources: ``open_source`` picks the format, every format answers the one interface alike, and a new
format is one class (the ``CONTRIBUTING.md`` recipe, run here)."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from equimol.datasets import sources
from equimol.datasets.ase_frames import AseFrames
from equimol.datasets.atoms_dataset import AtomsDataset, LabelSettings
from equimol.datasets.frame_source import FrameSource
from equimol.datasets.lmdb_dataset import LmdbFrames, write_lmdb
from equimol.datasets.oc20_raw import Oc20RawFrames
from equimol.datasets.readers import DEFAULT_KEYS, DataFormatError, LabelKeys, atoms_to_record, iter_ase_records
from equimol.datasets.sources import open_source
from test_data_datamodule import write_raw_s2ef_pair

TRAJ = "oc20/dft_relaxation_trajs_2020/random1000156.traj"


@pytest.fixture
def folder(shared_data: Path, tmp_path: Path) -> Path:
    """``frames.traj`` (6 frames), ``frames.lmdb`` (the same), ``raw/`` (one OC20 raw pair of them)."""
    frames = ase.io.read(shared_data / TRAJ, ":6")
    ase.io.write(tmp_path / "frames.traj", frames)
    write_lmdb(iter_ase_records(tmp_path / "frames.traj"), tmp_path / "frames.lmdb", progress=False)
    (tmp_path / "lmdbs").mkdir()
    write_lmdb(iter_ase_records(tmp_path / "frames.traj"), tmp_path / "lmdbs" / "a.lmdb", progress=False)
    (tmp_path / "raw").mkdir()
    trajectory = tmp_path / "raw" / "frames.traj"
    ase.io.write(trajectory, frames)
    write_raw_s2ef_pair(trajectory, tmp_path / "raw", "0", -1.5)
    trajectory.unlink()
    return tmp_path


def test_open_source_picks_the_format_by_name(folder: Path) -> None:
    assert type(open_source(folder / "frames.traj")) is AseFrames
    assert type(open_source(folder / "frames.lmdb")) is LmdbFrames
    assert type(open_source(folder / "lmdbs")) is LmdbFrames
    assert type(open_source(folder / "raw")) is Oc20RawFrames
    assert type(open_source(folder / "raw" / "0.extxyz.xz")) is Oc20RawFrames
    with pytest.raises(FileNotFoundError, match=r"nowhere\.xyz' does not exist"):
        open_source(folder / "nowhere.xyz")
    (folder / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="folder holds neither"):
        open_source(folder / "empty")


def test_every_format_answers_the_interface_alike(folder: Path) -> None:
    """The same six frames through the ASE, LMDB and OC20 raw sources: records, counts, streams, files."""
    formats = [open_source(folder / name) for name in ("frames.traj", "frames.lmdb", "raw")]
    expected = [len(atoms) for atoms in ase.io.read(folder / "frames.traj", ":")]
    for source in formats:
        assert len(source) == 6 and source.atom_counts().tolist() == expected
        streamed = list(source.records())
        for index in (0, 5):
            torch.testing.assert_close(source[index].pos, streamed[index].pos, rtol=0, atol=0)
            assert source[index].energy == streamed[index].energy
        atoms, record = next(iter(source.frames()))
        np.testing.assert_allclose(atoms.positions, record.pos.numpy(), rtol=0, atol=0)
        assert atoms.get_potential_energy() == pytest.approx(record.energy, abs=1e-8)
        assert all(file.exists() for file in source.files) and source.files
    assert [f.name for f in formats[2].files] == ["0.extxyz.xz", "0.txt.xz"]
    assert formats[2][3].reference_energy == -1.5


def test_an_ase_file_streams_without_being_read_whole(folder: Path) -> None:
    source = open_source(folder / "frames.traj")
    assert sum(1 for _ in source.records()) == 6
    assert source._records is None  # streamed: nothing kept in memory
    assert len(source) == 6 and source._records is not None


class NumpyFrames(FrameSource):
    """A format made up for this test: ``*.npz`` with ``positions [F, n, 3]``, ``numbers [n]``, ``energy [F]``."""

    name = "npz"

    def __init__(self, path, keys=DEFAULT_KEYS) -> None:
        super().__init__(path, keys)
        with np.load(self.path) as stored:
            self.arrays = {key: stored[key] for key in stored.files}

    @classmethod
    def accepts(cls, path: Path) -> bool:
        return path.suffix == ".npz"

    def __len__(self) -> int:
        return len(self.arrays["energy"])

    def __getitem__(self, index: int):
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = Atoms(self.arrays["numbers"], self.arrays["positions"][index])
        atoms.calc = SinglePointCalculator(atoms, energy=float(self.arrays["energy"][index]))
        return atoms_to_record(atoms, self.keys, str(self.path), index)


def test_a_new_format_is_one_class(tmp_path: Path, monkeypatch) -> None:
    positions = np.random.default_rng(0).normal(scale=1.5, size=(4, 3, 3))
    np.savez(tmp_path / "water.npz", positions=positions, numbers=[8, 1, 1], energy=[-1.0, -2.0, -3.0, -4.0])
    with pytest.raises(DataFormatError):  # unknown to ASE, before the format is listed
        len(open_source(tmp_path / "water.npz"))
    monkeypatch.setattr(sources, "FORMATS", (NumpyFrames, *sources.FORMATS))
    keys = LabelKeys(forces_key=None, stress_key=None)
    dataset = AtomsDataset([tmp_path / "water.npz"], LabelSettings(radial_cutoff=5.0), keys)
    assert len(dataset) == 4 and dataset.atom_counts().tolist() == [3] * 4
    assert dataset[2].energy.item() == -3.0 and dataset[2].edge_index.shape[1] > 0
    assert dataset.files() == [tmp_path / "water.npz"]


def test_data_index_refuses_what_is_not_an_lmdb(folder: Path, capsys) -> None:
    from equimol.cli import main

    assert main(["data", "index", str(folder / "frames.traj"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "frames.traj is read as 'ase' data" in error and len(error.strip().splitlines()) == 1
    assert main(["data", "index", str(folder / "lmdbs"), "--quiet"]) == 0
