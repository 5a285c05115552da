"""ZBL against data: the default switch leaves 3BPA's bonds alone, and the ``auto`` statistics see the residual.

* Every 3BPA training frame (train_300K, 500 frames): the ZBL force RMS at the default radii is below
  1% of that frame's label force RMS, and its energy below 1% of the spread (std) of the label
  energies. With the former defaults (switch ending at the covalent sum) ZBL gave 2.0 eV/Å RMS against
  0.98 eV/Å of label forces.
* Statistics: on frames whose labels are ZBL plus per-element constants, the statistics taken on the
  labels minus the model's physical terms give those constants as the per-species shift (1e-4 eV),
  a force RMS below 1e-6 of the labels' (the file rounds positions to 1e-8 Å, and ZBL forces change
  by up to ~1e4 eV/Å per Å at these contacts), and fitted E0s equal to the constants; without the
  terms they do not.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from equimol.datasets.atoms_dataset import AtomsDataset, LabelSettings
from equimol.datasets.datamodule import AtomsDataModule
from equimol.datasets.statistics import compute_statistics
from equimol.train.run import physical_terms

from equimol.models.config import ModelConfig
from equimol.models.physical import PhysicalTerms

CONSTANTS = {1: -13.5, 6: -1030.0, 8: -2042.0}  # eV per atom of the synthetic labels


def _zbl_terms(species, **keys) -> PhysicalTerms:
    config = ModelConfig.from_dict({"species": species, "avg_num_neighbors": 1.0, "pair_repulsion": "zbl", **keys})
    return PhysicalTerms(config)


def test_default_zbl_is_negligible_on_every_3bpa_training_frame(shared_data: Path) -> None:
    frames = ase.io.read(shared_data / "3bpa" / "train_300K.xyz", ":")
    terms = _zbl_terms(["H", "C", "N", "O"])
    label_energies = np.array([atoms.get_potential_energy() for atoms in frames])
    worst_force_share, worst_energy = 0.0, 0.0
    for atoms in frames:
        energy, forces = terms.energy_and_forces(atoms.positions, atoms.numbers, atoms.cell[:], atoms.pbc)
        label_rms = np.sqrt(np.mean(atoms.get_forces() ** 2))
        worst_force_share = max(worst_force_share, np.sqrt(np.mean(forces**2)) / label_rms)
        worst_energy = max(worst_energy, abs(energy))
    print(f"largest ZBL force share {worst_force_share:.2e}, largest |E_ZBL| {worst_energy:.2e} eV")
    assert worst_force_share < 0.01
    assert worst_energy < 0.01 * label_energies.std()


def _labelled_frames(terms: PhysicalTerms) -> list[Atoms]:
    """Small molecules with close contacts, labelled with ZBL plus per-element constants."""
    rng = np.random.default_rng(0)
    frames = []
    compositions = ["CH", "OH", "CO", "CHH", "OOH", "CCOH"]  # not collinear: every constant identifiable
    for index in range(12):
        symbols = compositions[index % len(compositions)]
        positions = rng.normal(scale=0.5, size=(len(symbols), 3))
        atoms = Atoms(symbols, positions=positions)
        energy, forces = terms.energy_and_forces(atoms.positions, atoms.numbers, np.zeros((3, 3)), atoms.pbc)
        energy += sum(CONSTANTS[z] for z in atoms.numbers)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    return frames


@pytest.fixture
def zbl_file(tmp_path: Path) -> Path:
    path = tmp_path / "close.xyz"
    ase.io.write(path, _labelled_frames(_zbl_terms(["H", "C", "O"])), format="extxyz")
    return path


def test_statistics_are_taken_on_labels_minus_zbl(zbl_file: Path) -> None:
    terms = _zbl_terms(["H", "C", "O"])
    dataset = AtomsDataset([zbl_file], LabelSettings(radial_cutoff=5.0, min_distance=None))
    residual = compute_statistics(dataset, physical=terms)
    plain = compute_statistics(dataset)
    assert plain.force_rms > 10.0  # the labels' own forces are ZBL's: large at these contacts
    assert residual.force_rms <= 1e-6 * plain.force_rms  # the extxyz file rounds positions to 1e-8 Å
    for z, value in CONSTANTS.items():
        assert residual.per_species_energy_shift[z] == pytest.approx(value, abs=1e-4)
        assert plain.per_species_energy_shift[z] != pytest.approx(value, abs=1e-2)


def test_fitted_e0s_are_taken_on_labels_minus_zbl(zbl_file: Path) -> None:
    model = {"species": ["H", "C", "O"], "pair_repulsion": "zbl", "avg_num_neighbors": "auto", "e0s": "auto"}
    data = AtomsDataModule(train=str(zbl_file), val_fraction=0.2, element_references="fit", min_distance=None)
    data.use_physical_terms(physical_terms(ModelConfig.from_dict(model)))
    fitted = data.element_references.as_dict()
    for z, value in CONSTANTS.items():
        assert fitted[z] == pytest.approx(value, abs=1e-4)


def test_physical_terms_of_a_model_without_any_are_none() -> None:
    model = {"species": ["H"], "avg_num_neighbors": "auto", "energy_scale": "auto"}
    assert physical_terms(ModelConfig.from_dict(model)) is None
