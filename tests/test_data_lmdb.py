"""OC20-layout LMDBs built with ``equimol data convert`` from the 16 OC20 DFT relaxation trajectories.

Round trips are exact (float64 stored, nothing recomputed): positions, cell, forces, energy and
fixed atoms equal what ASE reads from the ``.traj`` files, bit for bit.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import ase.io
import lmdb
import numpy as np
import pytest
from equimol.datasets.lmdb_dataset import LmdbFrames, close_environment
from equimol.datasets.readers import DataFormatError

from equimol.cli import main

OC20_FRAMES = 2216


def trajectories(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "oc20" / "dft_relaxation_trajs_2020").glob("random*.traj"))
    assert len(files) == 16
    return files


@pytest.fixture(scope="session")
def oc20_lmdb(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 16 trajectories (2,216 frames) converted once per session with the command line."""
    output = tmp_path_factory.mktemp("oc20") / "oc20_s2ef.lmdb"
    assert main(["data", "convert", *map(str, trajectories(shared_data)), str(output), "--quiet"]) == 0
    return output


def test_oc20_lmdb_round_trips_exactly(oc20_lmdb: Path, shared_data: Path) -> None:
    frames = LmdbFrames(oc20_lmdb)
    assert len(frames) == OC20_FRAMES
    index = 0
    for path in trajectories(shared_data):
        for fid, atoms in enumerate(ase.io.read(path, ":")):
            record = frames[index]
            np.testing.assert_array_equal(record.pos.numpy(), atoms.get_positions())
            np.testing.assert_array_equal(record.cell.numpy()[0], atoms.get_cell()[:])
            np.testing.assert_array_equal(record.forces.numpy(), atoms.get_forces(apply_constraint=False))
            assert record.energy == atoms.get_potential_energy()
            np.testing.assert_array_equal(record.atomic_numbers.numpy(), atoms.get_atomic_numbers())
            fixed = np.zeros(len(atoms), dtype=bool)
            fixed[atoms.constraints[0].get_indices()] = True
            np.testing.assert_array_equal(record.fixed.numpy(), fixed)
            assert record.sid == path.stem and record.fid == fid
            index += 1
    assert index == OC20_FRAMES


def test_stored_layout_is_fairchems(oc20_lmdb: Path) -> None:
    close_environment(oc20_lmdb)  # LMDB forbids a second open of the file in this process
    env = lmdb.open(str(oc20_lmdb), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        assert pickle.loads(txn.get(b"length")) == OC20_FRAMES
        stored = pickle.loads(txn.get(b"0"))
        assert env.stat()["entries"] == OC20_FRAMES + 2  # frames, "length" and equimol's atom-count index
    env.close()
    for key in ("pos", "cell", "atomic_numbers", "natoms", "tags", "fixed", "sid", "fid", "energy", "forces"):
        assert key in stored, key
    assert tuple(stored.cell.shape) == (1, 3, 3)


def test_legacy_y_force_names_read(shared_data: Path, tmp_path: Path) -> None:
    path = trajectories(shared_data)[0]
    output = tmp_path / "legacy.lmdb"
    assert main(["data", "convert", str(path), str(output), "--legacy-names", "--quiet"]) == 0
    frames = LmdbFrames(output)
    raw = frames.raw(3)
    assert "y" in raw and "force" in raw and "energy" not in raw and "forces" not in raw
    atoms = ase.io.read(path, 3)
    record = frames[3]
    assert record.energy == atoms.get_potential_energy()
    np.testing.assert_array_equal(record.forces.numpy(), atoms.get_forces(apply_constraint=False))


def test_corrupt_lmdbs_raise_clear_errors(oc20_lmdb: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.lmdb"
    garbage.write_bytes(os.urandom(64 * 1024))
    with pytest.raises(DataFormatError, match=r"garbage\.lmdb: not a readable LMDB file"):
        LmdbFrames(garbage)
    # Cut a real file in half: LMDB still opens it, reading on would die of SIGBUS.
    truncated = tmp_path / "truncated.lmdb"
    truncated.write_bytes(oc20_lmdb.read_bytes()[: oc20_lmdb.stat().st_size // 2])
    with pytest.raises(DataFormatError, match=r"truncated\.lmdb: corrupt LMDB, file has \d+ bytes but its pages need"):
        LmdbFrames(truncated)
    # A value that is not a pickle, and a key that is missing.
    broken = tmp_path / "broken.lmdb"
    env = lmdb.open(str(broken), subdir=False, map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"0", b"not a pickle")
        txn.put(b"length", pickle.dumps(3))
    env.close()
    frames = LmdbFrames(broken)
    with pytest.raises(DataFormatError, match=r"broken\.lmdb, key 0: value cannot be unpickled"):
        frames[0]
    with pytest.raises(DataFormatError, match=r"broken\.lmdb: key 1 missing"):
        frames[1]


def test_missing_lmdb_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.lmdb' does not exist"):
        LmdbFrames(tmp_path / "nowhere.lmdb")


def test_convert_refuses_to_overwrite_and_reports_bad_frames(oc20_lmdb: Path, tmp_path: Path, capsys) -> None:
    assert main(["data", "convert", str(oc20_lmdb), str(oc20_lmdb), "--quiet"]) == 2
    assert "is also an input" in capsys.readouterr().err
    bad = tmp_path / "bad.xyz"
    bad.write_text('1\nProperties=species:S:1:pos:R:3 energy=1.0 pbc="F F F"\nH 0 0 0\n')
    output = tmp_path / "bad.lmdb"
    assert main(["data", "convert", str(bad), str(output), "--quiet"]) == 2
    assert "bad.xyz, frame 0: forces key 'forces' not found" in capsys.readouterr().err
    assert not output.exists()  # the partial output is removed
    assert [path.name for path in tmp_path.iterdir()] == ["bad.xyz"]  # and so is its hidden temporary file


MEMORY_SCRIPT = r"""
import json, resource, sys
from equimol.datasets.datamodule import OC20DataModule

def anonymous_rss_kib():
    # Anonymous (heap) memory only: the LMDB's file pages are mapped, shared and droppable, and
    # ru_maxrss counts them too, so it would grow with the file even when nothing is held.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])

module = OC20DataModule(train=sys.argv[1], batch_size=8, radial_cutoff=6.0)
module.setup()
loader = module.train_dataloader()
iterator = iter(loader)
next(iterator)
baseline = peak = anonymous_rss_kib()
structures = 8
graph_bytes = 0  # what holding every graph of the epoch at once would take (tensors only)
for batch in iterator:
    structures += int(batch.num_graphs)
    graph_bytes += sum(value.numel() * value.element_size() for _, value in batch if hasattr(value, "numel"))
    peak = max(peak, anonymous_rss_kib())
print(json.dumps({"structures": structures, "baseline_kib": baseline, "peak_anon_kib": peak,
                  "all_graphs_kib": graph_bytes // 1024,
                  "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def test_iterating_the_lmdb_datamodule_keeps_memory_bounded(oc20_lmdb: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(oc20_lmdb)], capture_output=True, text=True, check=True
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["structures"] == OC20_FRAMES
    growth_kib = measured["peak_anon_kib"] - measured["baseline_kib"]
    lmdb_kib = oc20_lmdb.stat().st_size / 1024
    print(f"LMDB {lmdb_kib:.0f} KiB; {measured}; anonymous growth {growth_kib} KiB")
    # A full load would hold every graph (all_graphs_kib, ~10x the LMDB); iterating lazily holds a
    # batch or two plus allocator slack, so the growth must stay a small fraction of it. 0.25 leaves
    # room for allocator noise (measured: 8 MiB growth against 233 MiB of graphs).
    assert growth_kib < 0.25 * measured["all_graphs_kib"]


def test_folder_of_lmdbs_and_pyg1_pickles(shared_data: Path, tmp_path: Path) -> None:
    import torch
    from equimol.datasets.lmdb_dataset import write_lmdb
    from equimol.datasets.readers import iter_ase_records
    from torch_geometric.data import Data

    folder = tmp_path / "s2ef"
    folder.mkdir()
    first, second = trajectories(shared_data)[8:10]
    write_lmdb(iter_ase_records(first), folder / "data.0000.lmdb", progress=False)
    # A PyG 1.x pickle: fields sit in the object's __dict__ (no _store); no "length" key, legacy names.
    env = lmdb.open(str(folder / "data.0001.lmdb"), subdir=False, map_size=1 << 26)
    atoms_list = ase.io.read(second, ":3")
    with env.begin(write=True) as txn:
        for index, atoms in enumerate(atoms_list):
            old = Data.__new__(Data)
            old.__dict__.update(
                pos=torch.tensor(atoms.get_positions(), dtype=torch.float32),
                cell=torch.tensor(atoms.get_cell()[:], dtype=torch.float32).unsqueeze(0),
                atomic_numbers=torch.tensor(atoms.get_atomic_numbers(), dtype=torch.float32),
                natoms=len(atoms),
                tags=torch.zeros(len(atoms)),
                fixed=torch.zeros(len(atoms)),
                y=atoms.get_potential_energy(),
                force=torch.tensor(atoms.get_forces(apply_constraint=False), dtype=torch.float32),
                sid=7,
                fid=index,
            )
            txn.put(str(index).encode(), pickle.dumps(old))
    env.close()
    frames = LmdbFrames(folder)
    first_count = len(ase.io.read(first, ":"))
    assert len(frames) == first_count + 3
    record = frames[first_count + 2]
    assert record.energy == atoms_list[2].get_potential_energy()
    expected = atoms_list[2].get_positions().astype(np.float32).astype(np.float64)  # stored in float32
    np.testing.assert_array_equal(record.pos.numpy(), expected)
    assert record.atomic_numbers.dtype == torch.int64 and record.fixed.dtype == torch.bool


def test_is2re_layout_with_relaxed_energy_target(shared_data: Path, tmp_path: Path) -> None:
    import torch
    from equimol.datasets.datamodule import AtomsDataModule
    from torch_geometric.data import Data

    path = trajectories(shared_data)[3]
    frames = ase.io.read(path, ":")
    initial, relaxed = frames[0], frames[-1]
    output = tmp_path / "is2re.lmdb"
    env = lmdb.open(str(output), subdir=False, map_size=1 << 24)
    with env.begin(write=True) as txn:  # IS2RE LMDBs: no "length" key, no forces
        for index in range(2):
            stored = Data(
                pos=torch.tensor(initial.get_positions()),
                cell=torch.tensor(initial.get_cell()[:]).unsqueeze(0),
                atomic_numbers=torch.tensor(initial.get_atomic_numbers()),
                natoms=len(initial),
                tags=torch.zeros(len(initial), dtype=torch.long),
                fixed=torch.zeros(len(initial)),
                sid=index,
                y_init=initial.get_potential_energy(),
                y_relaxed=relaxed.get_potential_energy(),
                pos_relaxed=torch.tensor(relaxed.get_positions()),
            )
            txn.put(str(index).encode(), pickle.dumps(stored))
    env.close()
    module = AtomsDataModule(train=str(output), energy_key="y_relaxed", forces_key=None, batch_size=2)
    batch = next(iter(module.train_dataloader()))
    assert batch.energy.tolist() == [relaxed.get_potential_energy()] * 2
    assert "forces" not in batch
    with pytest.raises(DataFormatError, match=r"is2re\.lmdb, frame 0: energy key 'energy' not found; keys present"):
        LmdbFrames(output)[0]
