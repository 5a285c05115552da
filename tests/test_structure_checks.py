"""Physics inputs without an answer are errors: zero-volume stress, pathological neighbor lists, atoms on top of
each other in training data (issue cases 6, 7 and 8)."""

from __future__ import annotations

import math
from pathlib import Path

import ase.build
import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from equimol.datasets.atoms_dataset import AtomsDataset, LabelSettings
from equimol.datasets.readers import DataFormatError
from test_model_structures import graph_of, single_thread, tiny_model  # noqa: F401

from equimol.calculator import EquimolCalculator
from equimol.graph import neighbor_list
from equimol.structure_checks import StructureError, estimated_neighbors_per_atom, periodic_measure


def slab_without_height() -> Atoms:
    """A 2D-periodic Cu layer whose third cell vector is zero: a real area, no volume."""
    atoms = ase.build.fcc100("Cu", size=(2, 2, 1), vacuum=None)
    cell = atoms.cell[:].copy()
    cell[2] = 0.0
    atoms.set_cell(cell)
    atoms.pbc = [True, True, False]
    return atoms


def test_stress_of_a_zero_volume_periodic_cell_is_an_error() -> None:
    """Case 6: the model and the calculator refuse, where they used to return zeros."""
    atoms = slab_without_height()
    assert periodic_measure(atoms.cell[:], atoms.pbc) > 0  # the neighbor list exists (an area) ...
    model = tiny_model(species=["Cu"])
    energy = model(graph_of(atoms))["energy"]  # ... so energy and forces are fine
    assert torch.isfinite(energy).all()
    with pytest.raises(StructureError, match="zero volume"):
        model(graph_of(atoms), compute_stress=True)
    atoms.calc = EquimolCalculator(model)
    with pytest.raises(StructureError, match=r"pbc=\[True, True, False\]"):
        atoms.get_stress()


def test_stress_of_a_cell_with_volume_still_works() -> None:
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.02, seed=1)
    atoms.calc = EquimolCalculator(tiny_model(species=["Cu"]))
    assert np.isfinite(atoms.get_stress()).all() and np.abs(atoms.get_stress()).max() > 0


def test_a_cell_far_smaller_than_the_cutoff_is_refused_before_building() -> None:
    """Case 7: one C atom in a 0.05 Å cube at 5 Å would be ~4 million edges; refused, naming cell and pbc."""
    atoms = Atoms("C", cell=np.eye(3) * 0.05, pbc=True)
    with pytest.raises(StructureError, match=r"neighbors per atom.*cell=.*pbc=\[True, True, True\]"):
        neighbor_list(atoms.positions, atoms.cell[:], atoms.pbc, 5.0)
    atoms.calc = EquimolCalculator(tiny_model())
    with pytest.raises(StructureError, match="far too small"):
        atoms.get_potential_energy()


def test_a_singular_periodic_cell_names_the_cell_and_pbc() -> None:
    atoms = Atoms("CH", positions=[[0, 0, 0], [1.1, 0, 0]], cell=[[3, 0, 0], [6, 0, 0], [0, 0, 3]], pbc=True)
    atoms.calc = EquimolCalculator(tiny_model())
    with pytest.raises(StructureError, match=r"spans no volume \(cell=.*pbc=\[True, True, True\]"):
        atoms.get_potential_energy()


@pytest.mark.parametrize(
    "atoms",
    [
        ase.build.bulk("Cu", "fcc", a=3.6),
        ase.build.bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2),
        ase.build.fcc111("Cu", size=(3, 3, 3), vacuum=6.0, periodic=False),
        ase.build.molecule("CH4"),
    ],
    ids=["fcc-primitive", "fcc-cubic-2x", "slab-2d", "molecule"],
)
def test_the_neighbor_estimate_bounds_real_structures(atoms: Atoms) -> None:
    """The estimate is within a factor of 2 above the true count for bulk, and an upper bound otherwise."""
    if not atoms.pbc.all() and atoms.pbc.any():
        atoms.pbc = [True, True, False]
    sender, _, _ = neighbor_list(atoms.positions, atoms.cell[:], atoms.pbc, 5.0)
    actual = len(sender) / len(atoms)
    estimate = estimated_neighbors_per_atom(len(atoms), atoms.cell[:], atoms.pbc, 5.0)
    assert actual <= estimate * 1.15 + 1e-9
    if atoms.pbc.all():
        assert estimate <= 2 * actual
    assert math.isfinite(estimate) and estimate < 2000


def _frames(path: Path, distances: list[float]) -> Path:
    frames = []
    for distance in distances:
        atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, distance]])
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((2, 3)))
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    return path


def test_atoms_closer_than_min_distance_name_the_file_and_frame(tmp_path: Path) -> None:
    """Case 8: an error naming file and frame; ``min_distance=None`` allows the frame."""
    path = _frames(tmp_path / "close.xyz", [0.74, 0.74, 0.05, 0.74])
    strict = AtomsDataset([path], LabelSettings(radial_cutoff=5.0, min_distance=0.5))
    assert strict[0].num_nodes == 2
    with pytest.raises(DataFormatError, match=r"close\.xyz, frame 2: atoms 0 and 1 are 0\.05 Å apart.*min_distance"):
        strict[2]
    allowed = AtomsDataset([path], LabelSettings(radial_cutoff=5.0, min_distance=None))
    assert allowed[2].num_nodes == 2


def test_close_atoms_across_a_periodic_boundary_are_found(tmp_path: Path) -> None:
    atoms = Atoms("H2", positions=[[0.01, 1, 1], [2.97, 1, 1]], cell=np.eye(3) * 3.0, pbc=True)
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((2, 3)))
    ase.io.write(tmp_path / "wrap.xyz", [atoms], format="extxyz")
    dataset = AtomsDataset([tmp_path / "wrap.xyz"], LabelSettings(radial_cutoff=2.0, min_distance=0.5))
    with pytest.raises(DataFormatError, match=r"wrap\.xyz, frame 0: atoms \d and \d are 0\.04 Å apart"):
        dataset[0]


def test_the_default_min_distance_accepts_the_shipped_data(shared_data: Path) -> None:
    """The data module's default (0.5 Å) against real frames: 3BPA and the OC20 adslab."""
    from equimol.datasets.datamodule import AtomsDataModule

    module = AtomsDataModule(
        train=str(shared_data / "3bpa" / "iso_atoms.xyz"), forces_key=None, val_fraction=0.0, batch_size=1
    )
    assert module.config.min_distance == 0.5
    for name in ("3bpa/train_300K.xyz", "oc20/oc20_single_adslab_atoms.json"):
        atoms = ase.io.read(shared_data / name, index=0)
        sender, receiver, offsets = neighbor_list(atoms.positions, atoms.cell[:], atoms.pbc, 5.0)
        vectors = atoms.positions[receiver] - atoms.positions[sender] + offsets @ atoms.cell[:]
        assert np.linalg.norm(vectors, axis=1).min() > 0.5, name
