"""The LMDB atom-count index: written by ``data convert``, added once to foreign LMDBs, atomic, read without frames."""

from __future__ import annotations

import pickle
from pathlib import Path

import ase.io
import lmdb
import numpy as np
import pytest
import torch
from equimol.datasets import lmdb_index
from equimol.datasets.lmdb_dataset import ATOM_COUNT_KEY, LmdbFrames, close_environment, write_lmdb
from equimol.datasets.readers import DataFormatError, iter_ase_records
from torch_geometric.data import Data


def _trajectory(shared_data: Path, number: int) -> Path:
    return sorted((shared_data / "oc20" / "dft_relaxation_trajs_2020").glob("random*.traj"))[number]


def _foreign_lmdb(path: Path, atoms_list: list, length_key: bool, pyg1: bool = False) -> None:
    """An LMDB as fairchem writes it (no atom-count index), optionally without "length" or as PyG 1.x pickles."""
    env = lmdb.open(str(path), subdir=False, map_size=1 << 26)
    with env.begin(write=True) as txn:
        for index, atoms in enumerate(atoms_list):
            fields = dict(
                pos=torch.tensor(atoms.get_positions()),
                cell=torch.tensor(atoms.get_cell()[:]).unsqueeze(0),
                atomic_numbers=torch.tensor(atoms.get_atomic_numbers()),
                natoms=len(atoms),
                y=atoms.get_potential_energy(),
                force=torch.tensor(atoms.get_forces(apply_constraint=False)),
            )
            if pyg1:
                record = Data.__new__(Data)
                record.__dict__.update(fields)
            else:
                record = Data(**fields)
            txn.put(str(index).encode(), pickle.dumps(record))
        if length_key:
            txn.put(b"length", pickle.dumps(len(atoms_list)))
    env.close()
    Path(f"{path}-lock").unlink(missing_ok=True)


def test_convert_writes_the_index(shared_data: Path, tmp_path: Path) -> None:
    first, second = _trajectory(shared_data, 0), _trajectory(shared_data, 7)  # 33 and 73 atoms
    records = list(iter_ase_records(first))[:5]
    records += list(iter_ase_records(second))[:4]
    output = tmp_path / "mixed.lmdb"
    write_lmdb(records, output, progress=False)
    frames = LmdbFrames(output)
    expected = [record.pos.shape[0] for record in records]
    assert expected[:5] == [33] * 5 and expected[5:] == [73] * 4
    np.testing.assert_array_equal(frames.atom_counts(), expected)
    assert len(frames) == 9


@pytest.mark.parametrize("length_key, pyg1", [(True, False), (False, False), (False, True)])
def test_index_command_adds_the_index_once(shared_data: Path, tmp_path: Path, length_key: bool, pyg1: bool) -> None:
    from equimol.cli import main

    atoms_list = ase.io.read(_trajectory(shared_data, 3), ":6")
    path = tmp_path / "foreign.lmdb"
    _foreign_lmdb(path, atoms_list, length_key, pyg1)
    with pytest.raises(DataFormatError, match=r"foreign\.lmdb: no atom-count index .* run `equimol data index "):
        LmdbFrames(path).atom_counts()
    close_environment(path)
    assert main(["data", "index", str(path), "--quiet"]) == 0
    frames = LmdbFrames(path)
    assert len(frames) == 6  # the index key is not a frame, with or without "length"
    np.testing.assert_array_equal(frames.atom_counts(), [len(atoms) for atoms in atoms_list])
    close_environment(path)
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:  # what fairchem's reader sees: "length" frames, keys "0".."length-1"
        assert pickle.loads(txn.get(b"length")) == 6
        assert np.frombuffer(txn.get(ATOM_COUNT_KEY), dtype="<i4").tolist() == [len(a) for a in atoms_list]
    env.close()
    assert not Path(f"{path}-lock").exists()


def test_interrupted_indexing_leaves_the_file_as_it_was(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "foreign.lmdb"
    _foreign_lmdb(path, ase.io.read(_trajectory(shared_data, 3), ":6"), length_key=True)
    before = path.read_bytes()
    calls = []

    def failing(value, file, key):
        calls.append(key)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return 38

    monkeypatch.setattr(lmdb_index, "_stored_atom_count", failing)
    with pytest.raises(KeyboardInterrupt):
        lmdb_index.index_lmdb(path, progress=False)
    close_environment(path)
    assert path.read_bytes() == before


def test_inconsistent_index_is_an_error(shared_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "foreign.lmdb"
    _foreign_lmdb(path, ase.io.read(_trajectory(shared_data, 3), ":4"), length_key=True)
    env = lmdb.open(str(path), subdir=False, map_size=1 << 26)
    with env.begin(write=True) as txn:
        txn.put(ATOM_COUNT_KEY, np.array([38, 38], dtype="<i4").tobytes())
    env.close()
    with pytest.raises(DataFormatError, match=r"index holds 2 entries for 4 frames; rebuild it with"):
        LmdbFrames(path).atom_counts()
    close_environment(path)
    lmdb_index.index_lmdb(path, force=True, progress=False)
    np.testing.assert_array_equal(LmdbFrames(path).atom_counts(), [38] * 4)
    close_environment(path)
