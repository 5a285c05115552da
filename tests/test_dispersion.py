"""D3(BJ) dispersion (:mod:`equimol.nn.dispersion`): against tad-dftd3 alone, finite differences, periodic cells.

* Molecules (a 3BPA frame; two water molecules 3 Å apart): per-atom energies and forces equal
  ``tad_dftd3.dftd3`` (PBE-D3(BJ), ``s9 = 0``) to 1e-12 relative; the model with ``model.dispersion``
  adds exactly that to the model without it, and so does ``EquimolCalculator(dispersion="d3")``.
* Periodic cell (cutoffs 6 and 4 Å to keep the sums small): the energy equals tad-dftd3's per-atom
  energies of the central cell's atoms inside an explicit cluster of images that reaches beyond both
  cutoffs (1e-12 relative), the energy of a 2x1x1 supercell is twice the cell's (1e-12), and forces
  and stress match central differences (step 1e-5 Å / strain; 1e-7 relative: truncation ~h^2).
* ``model.dispersion`` statistics are taken on labels minus D3; bad options name the key.
"""

from __future__ import annotations

import ase.build
import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from test_model_structures import graph_of

pytest.importorskip("tad_dftd3", reason="the d3 extra is part of the test extra")
import tad_dftd3  # noqa: E402
from tad_mctc.units import AA2AU, AU2EV  # noqa: E402

from equimol.calculator import EquimolCalculator  # noqa: E402
from equimol.models import build_model  # noqa: E402
from equimol.models.config import ModelConfig  # noqa: E402
from equimol.nn.dispersion import D3Dispersion  # noqa: E402

SMALL = {"kind": "d3", "xc": "pbe", "damping": "bj", "cutoff": 6.0, "cn_cutoff": 4.0}


def _tad(atoms: Atoms, cutoff: tad_dftd3.Cutoff | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-atom energies (eV) and forces (eV/Å) of tad-dftd3 alone, PBE-D3(BJ) without three-body terms."""
    parameters = tad_dftd3.param.get_functional_params("pbe", damping="bj", dtype=torch.float64)
    parameters["s9"] = torch.tensor(0.0, dtype=torch.float64)
    positions = torch.tensor(atoms.positions * AA2AU, dtype=torch.float64, requires_grad=True)
    energies = tad_dftd3.dftd3(torch.tensor(atoms.numbers), positions, parameters, cutoff=cutoff) * AU2EV
    (gradient,) = torch.autograd.grad(energies.sum(), positions)
    return energies.detach().numpy(), -gradient.numpy() * AA2AU


def _ours(module: D3Dispersion, atoms: Atoms) -> tuple[np.ndarray, torch.Tensor]:
    positions = torch.tensor(atoms.positions, dtype=torch.float64, requires_grad=True)
    energies = module(
        torch.tensor(atoms.numbers),
        positions,
        torch.tensor(atoms.cell[:], dtype=torch.float64).view(1, 3, 3),
        torch.tensor(atoms.pbc).view(1, 3),
        torch.zeros(len(atoms), dtype=torch.long),
    )
    (gradient,) = torch.autograd.grad(energies.sum(), positions)
    return energies.detach().numpy(), -gradient.numpy()


def _molecules(shared_data) -> dict[str, Atoms]:
    water = ase.build.molecule("H2O")
    dimer = water + water.copy()
    dimer.positions[3:] += [3.0, 0.4, 0.2]
    return {"3bpa": ase.io.read(shared_data / "3bpa" / "train_300K.xyz", 0), "water dimer": dimer}


@pytest.mark.parametrize("name", ["3bpa", "water dimer"])
def test_molecule_equals_tad_dftd3(shared_data, name):
    atoms = _molecules(shared_data)[name]
    reference_energies, reference_forces = _tad(atoms)
    energies, forces = _ours(D3Dispersion(kind="d3", xc="pbe", damping="bj"), atoms)
    assert np.abs(energies - reference_energies).max() <= 1e-12 * np.abs(reference_energies).max()
    assert np.abs(forces - reference_forces).max() <= 1e-12 * np.abs(reference_forces).max()


def _crystal() -> Atoms:
    return Atoms(
        "CHON",
        scaled_positions=[[0.1, 0.1, 0.1], [0.35, 0.2, 0.15], [0.6, 0.55, 0.5], [0.2, 0.7, 0.8]],
        cell=[[4.2, 0.3, 0.0], [0.2, 3.9, 0.1], [0.0, 0.4, 4.5]],
        pbc=True,
    )


def test_periodic_energy_equals_tad_dftd3_on_an_explicit_cluster_of_images():
    crystal = _crystal()
    energies, _ = _ours(D3Dispersion(**SMALL), crystal)
    # images within 3 cells: the cluster reaches beyond cutoff + cn_cutoff (10 Å) of every central atom
    images = crystal.repeat((7, 7, 7))
    images.positions -= crystal.cell.sum(axis=0) * 3
    images.pbc = False
    cutoff = tad_dftd3.Cutoff(disp2=6.0 * AA2AU, cn=4.0 * AA2AU)
    cluster_energies, _ = _tad(images, cutoff)
    central = [i for i in range(len(images)) if np.abs(images.positions[i] - crystal.positions[i % 4]).max() < 1e-9]
    assert len(central) == 4
    assert energies.sum() == pytest.approx(cluster_energies[central].sum(), rel=1e-12)


def test_supercell_energy_is_twice_the_cell():
    module = D3Dispersion(**SMALL)
    crystal = _crystal()
    assert _ours(module, crystal.repeat((2, 1, 1)))[0].sum() == pytest.approx(
        2 * _ours(module, crystal)[0].sum(), rel=1e-12
    )


def _model(**changes):
    config = {"species": ["H", "C", "N", "O"], "channels": 4, "lmax": 1, "num_layers": 1, "avg_num_neighbors": 4.0}
    return build_model({**config, **changes}).eval()


def test_model_adds_d3_and_its_forces_and_stress_match_finite_differences():
    crystal = _crystal()
    plain, dispersive = _model(), _model(dispersion=SMALL)
    out, base = dispersive(graph_of(crystal), compute_stress=True), plain(graph_of(crystal), compute_stress=True)
    energies, forces = _ours(D3Dispersion(**SMALL), crystal)
    assert float(out["energy"] - base["energy"]) == pytest.approx(energies.sum(), rel=1e-12)
    np.testing.assert_allclose((out["forces"] - base["forces"]).detach().numpy(), forces, rtol=0, atol=1e-12)
    step, volume = 1e-5, crystal.get_volume()

    def energy(atoms):
        with torch.no_grad():
            return float(dispersive(graph_of(atoms), compute_forces=False)["energy"])

    reference_forces = np.zeros((len(crystal), 3))
    for atom in range(len(crystal)):
        for axis in range(3):
            plus, minus = crystal.copy(), crystal.copy()
            plus.positions[atom, axis] += step
            minus.positions[atom, axis] -= step
            reference_forces[atom, axis] = -(energy(plus) - energy(minus)) / (2 * step)
    computed = out["forces"].detach().numpy()
    assert np.abs(computed - reference_forces).max() <= 1e-7 * np.abs(computed).max()
    reference_stress = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            values = []
            for sign in (1, -1):
                strain = np.eye(3)
                strain[i, j] += sign * step / 2
                strain[j, i] += sign * step / 2
                moved = crystal.copy()
                moved.set_cell(crystal.cell[:] @ strain, scale_atoms=True)
                values.append(energy(moved))
            reference_stress[i, j] = (values[0] - values[1]) / (2 * step) / volume
    stress = out["stress"].detach().numpy().reshape(3, 3)
    assert np.abs(stress - reference_stress).max() <= 1e-7 * np.abs(stress).max()


def test_model_file_keeps_d3_and_the_calculator_adds_it(shared_data, tmp_path):
    from equimol.export import export_model, load_model

    atoms = _molecules(shared_data)["3bpa"]
    reference_energies, reference_forces = _tad(atoms)
    plain, dispersive = _model(), _model(dispersion={"kind": "d3", "xc": "pbe", "damping": "bj"})
    loaded = load_model(export_model(dispersive, tmp_path / "d3.pt"))
    with torch.no_grad():
        difference = float(
            loaded(graph_of(atoms), compute_forces=False)["energy"]
            - plain(graph_of(atoms), compute_forces=False)["energy"]
        )
    assert difference == pytest.approx(reference_energies.sum(), rel=1e-12)
    with_d3 = atoms.copy()
    with_d3.calc = EquimolCalculator(plain, dispersion="d3", xc="pbe")
    without = atoms.copy()
    without.calc = EquimolCalculator(plain)
    assert with_d3.get_potential_energy() - without.get_potential_energy() == pytest.approx(
        reference_energies.sum(), rel=1e-10
    )
    np.testing.assert_allclose(with_d3.get_forces() - without.get_forces(), reference_forces, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="already includes D3"):
        EquimolCalculator(dispersive, dispersion="d3")


def test_calculator_stress_includes_d3():
    crystal = _crystal()
    plain = _model()
    with_d3, without = crystal.copy(), crystal.copy()
    with_d3.calc = EquimolCalculator(plain, dispersion="d3", xc="pbe", dispersion_cutoff=6.0, dispersion_cn_cutoff=4.0)
    without.calc = EquimolCalculator(plain)
    dispersive = _model(dispersion=SMALL)
    expected = dispersive(graph_of(crystal), compute_stress=True)["stress"].detach().numpy().reshape(3, 3)
    expected -= plain(graph_of(crystal), compute_stress=True)["stress"].detach().numpy().reshape(3, 3)
    voigt = expected[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    np.testing.assert_allclose(with_d3.get_stress() - without.get_stress(), voigt, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kind": "d4"}, "kind must be one of"),
        ({"damping": "zero"}, "damping must be one of"),
        ({"xc": "no-such-functional"}, "no D3"),
        ({"cutoff": -1.0}, "cutoff must be > 0"),
        ({"three_body": True}, r"unknown key\(s\) model\.dispersion\.three_body"),
    ],
)
def test_bad_dispersion_options_name_the_key(options, message):
    values = {"species": ["H"], "avg_num_neighbors": 1.0, "dispersion": {"kind": "d3", **options}}
    with pytest.raises(ValueError, match=rf"dispersion.*{message}|{message}"):
        ModelConfig.from_dict(values)


def test_statistics_are_taken_on_labels_minus_d3(tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator
    from equimol.datasets.atoms_dataset import AtomsDataset, LabelSettings
    from equimol.datasets.statistics import compute_statistics
    from equimol.train.run import physical_terms

    model = {"species": ["H", "O"], "avg_num_neighbors": "auto", "dispersion": {"kind": "d3"}}
    terms = physical_terms(ModelConfig.from_dict(model))
    rng = np.random.default_rng(1)
    frames = []
    for index in range(8):
        atoms = Atoms("OH" if index % 2 else "OHH", positions=rng.uniform(0, 2.5, size=(2 + (index + 1) % 2, 3)))
        energy, forces = terms.energy_and_forces(atoms.positions, atoms.numbers, np.zeros((3, 3)), atoms.pbc)
        atoms.calc = SinglePointCalculator(atoms, energy=energy - 2.0 * len(atoms), forces=forces)
        frames.append(atoms)
    ase.io.write(tmp_path / "d3.xyz", frames, format="extxyz")
    dataset = AtomsDataset([tmp_path / "d3.xyz"], LabelSettings(radial_cutoff=5.0, min_distance=None))
    statistics = compute_statistics(dataset, physical=terms)
    assert statistics.force_rms < 1e-6 * compute_statistics(dataset).force_rms
    assert statistics.per_species_energy_shift == pytest.approx({1: -2.0, 8: -2.0}, abs=1e-6)


def test_a_compiled_model_file_with_d3_is_refused_in_one_line(tmp_path, capsys):
    from equimol.cli import main
    from equimol.export import export_model

    export_model(_model(dispersion=SMALL), tmp_path / "d3.pt")
    assert main(["export", str(tmp_path / "d3.pt"), str(tmp_path / "d3.pt2"), "--format", "export"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("equimol export: error: model.dispersion") and "\n" not in error
