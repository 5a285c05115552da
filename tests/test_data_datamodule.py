"""DataModules: 3BPA/OC20/OC22 presets, references, splits, batching, workers, statistics and their cache.

Referenced energies are checked against an independent sum of the reference file's numbers, to
1e-9 eV: the values are ~1e4 eV, so float64 summation in another order differs by ~1e-11 eV.
"""

from __future__ import annotations

import itertools
import lzma
from pathlib import Path

import ase.io
import equimol.datasets.statistics as statistics_module
import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from equimol.datasets.datamodule import AtomsDataModule, OC20DataModule, OC22DataModule, ThreeBPADataModule
from equimol.datasets.lmdb_dataset import write_lmdb
from equimol.datasets.readers import DataFormatError, iter_ase_records, read_ase_records
from equimol.datasets.references import ElementReferences

from equimol.cli import main
from equimol.errors import ConfigError

ENERGY_TOL = 1e-9
E0 = {1: -13.587222780835477, 6: -1029.4889999855063, 7: -1484.9814568572233, 8: -2041.9816003861047}


def test_3bpa_preset_splits_e0s_and_batches(shared_data: Path) -> None:
    module = ThreeBPADataModule(data_dir=str(shared_data), test="3bpa/test_600K.xyz")
    module.setup()
    assert len(module.indices["train"]) == 475 and len(module.indices["val"]) == 25
    assert len(module.indices["test"]) == 2138
    assert not set(module.indices["train"]) & set(module.indices["val"])
    again = ThreeBPADataModule(data_dir=str(shared_data))
    again.setup()
    np.testing.assert_array_equal(again.indices["val"], module.indices["val"])
    other = ThreeBPADataModule(data_dir=str(shared_data), seed=1)
    other.setup()
    assert set(other.indices["val"]) != set(module.indices["val"])

    batch = next(iter(module.train_dataloader()))
    assert batch.num_graphs == 5 and batch.energy.shape == (5,) and batch.forces.shape == (135, 3)
    assert batch.energy.dtype == torch.float64
    records = read_ase_records(shared_data / "3bpa" / "train_300K.xyz")
    e0_sum = 12 * E0[6] + 12 * E0[1] + 2 * E0[7] + E0[8]
    for graph_index, energy in zip(batch.fid.tolist(), batch.energy.tolist()):
        assert energy == pytest.approx(records[graph_index].energy - e0_sum, abs=ENERGY_TOL)
    assert bool(batch.force_mask.all())
    val_sizes = [b.num_graphs for b in module.val_dataloader()]
    assert sum(val_sizes) == 25 and max(val_sizes) == 5


def test_statistics_match_graphs_and_are_cached(shared_data: Path, monkeypatch) -> None:
    module = ThreeBPADataModule(data_dir=str(shared_data), radial_cutoff=4.0)
    statistics = module.statistics("train")
    graphs = [module.datasets["train"][int(i)] for i in module.indices["train"]]
    edges = sum(g.edge_index.shape[1] for g in graphs)
    assert statistics.avg_num_neighbors == pytest.approx(edges / (27 * len(graphs)), rel=1e-15)
    assert statistics.edge_counts == [g.edge_index.shape[1] for g in graphs]
    forces = torch.cat([g.forces for g in graphs])
    assert statistics.force_rms == pytest.approx(float(forces.pow(2).mean().sqrt()), rel=1e-12)
    assert statistics.species == [1, 6, 7, 8]

    def no_recompute(*args, **kwargs):
        raise AssertionError("statistics recomputed although cached")

    monkeypatch.setattr(statistics_module, "compute_statistics", no_recompute)
    fresh = ThreeBPADataModule(data_dir=str(shared_data), radial_cutoff=4.0)
    assert fresh.statistics("train") == statistics


def test_statistics_cache_invalidated_when_data_change(shared_data: Path, tmp_path: Path) -> None:
    lines = (shared_data / "3bpa" / "train_300K.xyz").read_text().splitlines(keepends=True)
    path = tmp_path / "subset.xyz"
    path.write_text("".join(lines[: 29 * 10]))
    module = AtomsDataModule(train=str(path), element_references=E0)
    assert module.statistics().num_structures == 10
    path.write_text("".join(lines[: 29 * 12]))
    module = AtomsDataModule(train=str(path), element_references=E0)
    assert module.statistics().num_structures == 12


def test_edge_bounded_batches(shared_data: Path) -> None:
    module = ThreeBPADataModule(data_dir=str(shared_data), max_edges=3000)
    module.setup()
    counts = dict(zip(module.indices["train"].tolist(), module.statistics("train").edge_counts))
    seen = []
    for batch in module.train_dataloader():
        assert batch.edge_index.shape[1] <= 3000
        seen += batch.fid.tolist()
    assert sorted(seen) == sorted(counts)  # every structure once, none dropped
    too_small = ThreeBPADataModule(data_dir=str(shared_data), max_edges=100)
    with pytest.raises(ValueError, match=r"max_edges=100 is smaller than .*train_300K\.xyz, frame \d+, which has"):
        too_small.train_dataloader()


def test_lightning_reshuffles_every_epoch(shared_data: Path) -> None:
    from lightning.fabric.utilities.data import _set_sampler_epoch  # the hook Lightning's fit loop calls

    for max_edges in (None, 2500):
        loader = ThreeBPADataModule(data_dir=str(shared_data), max_edges=max_edges).train_dataloader()
        orders = []
        for epoch in (0, 1, 0):
            _set_sampler_epoch(loader, epoch)
            orders.append([i for batch in loader.batch_sampler for i in batch])
        assert orders[0] == orders[2] != orders[1]
        assert sorted(orders[0]) == sorted(orders[1]) == list(range(475))


def test_periodic_frame_with_singular_cell(tmp_path: Path) -> None:
    from ase import Atoms

    path = tmp_path / "flat.xyz"
    frames = [Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], cell=np.eye(3) * 8, pbc=True) for _ in range(2)]
    frames[1].cell = np.zeros((3, 3))
    for atoms in frames:
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((2, 3)))
    ase.io.write(path, frames, format="extxyz")
    module = AtomsDataModule(train=str(path))
    module.setup()
    module.datasets["train"][0]
    with pytest.raises(DataFormatError, match=r"flat\.xyz, frame 1: the periodic cell spans no volume \(cell=.*pbc="):
        module.datasets["train"][1]
    with pytest.raises(DataFormatError, match=r"flat\.xyz, frame 1: the periodic cell spans no volume \(cell=.*pbc="):
        module.statistics()


def oxide_lmdb(shared_data: Path, folder: Path) -> Path:
    """FORMAT FIXTURE, not OC22 data: Kitchin's BO2 oxide DFT set (shared/data/extra) written in the
    OC22 S2EF-Total LMDB layout (pickled PyG Data, total energies, integer sids). No OC22 sample exists here."""
    records = []
    for fid, record in enumerate(read_ase_records(shared_data / "extra" / "kitchin_BO2_oxide_polymorphs.db")):
        record.sid, record.fid = 1000 + fid, 0
        del record.pbc  # fairchem's LMDBs carry no pbc (periodic in 3D is implied)
        records.append(record)
    output = folder / "oc22_format_fixture.lmdb"
    write_lmdb(records, output, progress=False)
    return output


def test_oc22_total_energies_with_linfit_references(shared_data: Path, tmp_path: Path) -> None:
    lmdb_path = oxide_lmdb(shared_data, tmp_path)
    module = OC22DataModule(train=str(lmdb_path), data_dir=str(shared_data), batch_size=7)
    module.setup()
    coeff = np.load(shared_data / "oc22" / "oc22_linfit_coeffs.npz")["coeff"]
    records = read_ase_records(shared_data / "extra" / "kitchin_BO2_oxide_polymorphs.db")
    count = 0
    for batch in module.train_dataloader():
        for graph in batch.to_data_list():
            record = records[graph.sid - 1000]
            expected = record.energy - sum(coeff[z] for z in record.atomic_numbers.tolist())
            assert graph.energy.item() == pytest.approx(expected, abs=ENERGY_TOL)
            np.testing.assert_array_equal(graph.forces.numpy(), record.forces.numpy())
            assert bool(graph.pbc.all())
            count += 1
    assert count == 295


def write_raw_s2ef_pair(trajectory: Path, folder: Path, stem: str, reference: float) -> list:
    """FORMAT FIXTURE: a real OC20 trajectory in the raw S2EF layout (extxyz.xz + txt.xz); the
    per-system reference energy is made up (the real ones are not in shared/data)."""
    frames = ase.io.read(trajectory, ":")
    with lzma.open(folder / f"{stem}.extxyz.xz", "wt") as handle:
        ase.io.write(handle, frames, format="extxyz")
    with lzma.open(folder / f"{stem}.txt.xz", "wt") as handle:
        handle.writelines(f"{trajectory.stem},{k},{reference}\n" for k in range(len(frames)))
    return frames


def test_oc20_raw_pairs_in_adsorption_mode(shared_data: Path, tmp_path: Path) -> None:
    trajs = sorted((shared_data / "oc20" / "dft_relaxation_trajs_2020").glob("*.traj"))
    raw = tmp_path / "raw"
    raw.mkdir()
    first = write_raw_s2ef_pair(trajs[8], raw, "0", -60.25)
    second = write_raw_s2ef_pair(trajs[10], raw, "1", -790.5)
    module = OC20DataModule(train=str(raw), energy_target="adsorption", batch_size=4, seed=3)
    module.setup()
    assert len(module.datasets["train"]) == len(first) + len(second)
    graph = module.datasets["train"][len(first) + 2]
    assert graph.sid == trajs[10].stem and graph.fid.item() == 2
    assert graph.energy.item() == second[2].get_potential_energy() - (-790.5)
    assert torch.equal(graph.force_mask, ~graph.fixed) and 0 < int(graph.fixed.sum()) < graph.num_nodes

    # The pairs converted to LMDB (a file, and the whole folder) keep their reference energies.
    output = tmp_path / "raw.lmdb"
    assert main(["data", "convert", str(raw / "0.extxyz.xz"), str(output), "--quiet"]) == 0
    lmdb_module = OC20DataModule(train=str(output), energy_target="adsorption")
    lmdb_module.setup()
    assert lmdb_module.datasets["train"][5].energy.item() == first[5].get_potential_energy() + 60.25
    assert main(["data", "convert", str(raw), str(tmp_path / "folder.lmdb"), "--quiet"]) == 0
    folder_module = OC20DataModule(train=str(tmp_path / "folder.lmdb"), energy_target="adsorption")
    folder_module.setup()
    assert len(folder_module.datasets["train"]) == len(first) + len(second)
    assert folder_module.datasets["train"][len(first)].energy.item() == second[0].get_potential_energy() + 790.5

    # A mismatched system file is an error naming both files.
    with lzma.open(raw / "1.txt.xz", "wt") as handle:
        handle.write(f"{trajs[10].stem},0,-790.5\n")
    with pytest.raises(DataFormatError, match=r"1\.extxyz\.xz, frame 1: .*1\.txt\.xz has only 1 lines"):
        OC20DataModule(train=str(raw)).setup()


def test_adsorption_mode_with_system_reference_mapping(shared_data: Path, tmp_path: Path) -> None:
    traj = shared_data / "oc20" / "dft_relaxation_trajs_2020" / "random1000156.traj"
    output = tmp_path / "one.lmdb"
    write_lmdb(iter_ase_records(traj), output, progress=False)
    module = OC20DataModule(train=str(output), energy_target="adsorption", system_references={"random1000156": -67.0})
    module.setup()
    atoms = ase.io.read(traj, 4)
    assert module.datasets["train"][4].energy.item() == atoms.get_potential_energy() + 67.0
    missing = OC20DataModule(train=str(output), energy_target="adsorption", system_references={"other": 1.0})
    missing.setup()
    with pytest.raises(DataFormatError, match=r"one\.lmdb, frame 0: no per-system reference energy for system"):
        missing.datasets["train"][0]


def test_workers_give_the_same_batches(shared_data: Path, tmp_path: Path) -> None:
    traj = shared_data / "oc20" / "dft_relaxation_trajs_2020" / "random1000163.traj"
    output = tmp_path / "workers.lmdb"
    write_lmdb(iter_ase_records(traj), output, progress=False)
    serial = OC20DataModule(train=str(output), val_fraction=0.5, batch_size=4)
    parallel = OC20DataModule(train=str(output), val_fraction=0.5, batch_size=4, num_workers=2)
    for a, b in itertools.zip_longest(serial.val_dataloader(), parallel.val_dataloader()):
        assert torch.equal(a.pos, b.pos) and torch.equal(a.energy, b.energy) and torch.equal(a.edge_index, b.edge_index)


def test_fitted_element_references(shared_data: Path) -> None:
    rng = np.random.default_rng(0)
    truth = {1: -3.5, 8: -7.25, 29: -4.0}
    numbers = [rng.choice([1, 8, 29], size=rng.integers(2, 9)) for _ in range(40)]
    energies = [sum(truth[z] for z in n) for n in numbers]
    fitted = ElementReferences.fit(numbers, energies)
    for z, value in truth.items():
        assert fitted.coeff[z] == pytest.approx(value, abs=1e-12)  # exact data, well-conditioned 40x3 system
    module = AtomsDataModule(train=str(shared_data / "extra" / "kitchin_Au_clusters_PBE.db"), element_references="fit")
    module.setup()
    records = read_ase_records(shared_data / "extra" / "kitchin_Au_clusters_PBE.db")
    per_atom = sum(r.energy * r.natoms for r in records) / sum(r.natoms**2 for r in records)
    assert module.element_references.coeff[79] == pytest.approx(per_atom, rel=1e-12)


def test_config_keys_and_paths(shared_data: Path, monkeypatch) -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) data\.radial_cuttoff;"):
        AtomsDataModule.from_config({"train": "3bpa/train_300K.xyz", "radial_cuttoff": 5.0})
    with pytest.raises(ConfigError, match="radial_cuttoff"):
        ThreeBPADataModule(radial_cuttoff=5.0)
    monkeypatch.setenv("EQUIMOL_DATA_DIR", str(shared_data))
    module = ThreeBPADataModule.from_config({"radial_cutoff": 4.5, "dtype": "float32", "batch_size": 2})
    batch = next(iter(module.train_dataloader()))
    assert batch.pos.dtype == torch.float32 and batch.energy.dtype == torch.float32 and batch.num_graphs == 2
    monkeypatch.delenv("EQUIMOL_DATA_DIR")
    with pytest.raises(
        FileNotFoundError, match=r"'/nonexistent/3bpa/\S+' does not exist \(relative paths resolve under data_dir"
    ):
        ThreeBPADataModule(data_dir="/nonexistent").setup()


def test_stats_command(shared_data: Path, capsys) -> None:
    path = shared_data / "3bpa" / "train_300K.xyz"
    assert main(["data", "stats", str(path), "--radial-cutoff", "5.0", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "structures                 500" in out and "species                    H, C, N, O" in out
    assert "average neighbors" in out and "force rms" in out


def test_download_helpers_only_describe(monkeypatch, tmp_path: Path) -> None:
    from equimol.datasets.download import data_dir, describe

    text = describe("oc22")
    assert "s2ef_total_train_val_test_lmdbs.tar.gz" in text and "CC BY 4.0" in text and "EQUIMOL_DATA_DIR" in text
    with pytest.raises(KeyError, match="unknown dataset 'md17'"):
        describe("md17")
    monkeypatch.setenv("EQUIMOL_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.delenv("EQUIMOL_DATA_DIR")
    with pytest.raises(FileNotFoundError, match="EQUIMOL_DATA_DIR"):
        data_dir()


def test_statistics_cached_beside_writable_data_only(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    lines = (shared_data / "3bpa" / "train_300K.xyz").read_text().splitlines(keepends=True)
    writable, read_only = tmp_path / "writable", tmp_path / "read_only"
    for folder in (writable, read_only):
        folder.mkdir()
        (folder / "subset.xyz").write_text("".join(lines[: 29 * 4]))
    read_only.chmod(0o555)
    fallback = tmp_path / "cache"
    monkeypatch.setenv("EQUIMOL_CACHE_DIR", str(fallback))
    try:
        AtomsDataModule(train=str(writable / "subset.xyz"), element_references=E0).statistics()
        AtomsDataModule(train=str(read_only / "subset.xyz"), element_references=E0).statistics()
        assert len(list((writable / ".equimol_statistics").glob("*.json"))) == 1
        assert not (read_only / ".equimol_statistics").exists()  # no write bits: untouched, even for root
        assert len(list((fallback / "dataset_statistics").glob("*.json"))) == 1
    finally:
        read_only.chmod(0o755)
