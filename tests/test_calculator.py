"""The ASE calculator: agreement with the model, stress against the strain derivative, neighbor-list reuse,
unknown elements, and the ASE optimizers and integrators.

The models here are *untrained* (random weights from ``build_model``, float64, ``energy_scale: 5`` so that
forces on a 3BPA frame are ~0.1 eV/Å): the tests check the calculator and its integration with ASE,
not the quality of a potential. An untrained equimol model is a smooth, rotation-invariant many-body
function of the positions, which is all these tests need. (NVE energy drift over 1000 steps, beside
LAMMPS: ``benchmarks/lammps_nve_drift.py``.)
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError

from equimol.calculator import EquimolCalculator
from equimol.export import export_model
from equimol.graph import atoms_to_graph
from equimol.microbench.systems import small_model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """27-atom calls are ~10 ms; on a loaded 2-core machine a second intra-op thread makes each ~30x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def molecule_model():
    return small_model(["H", "C", "N", "O"], energy_scale=5.0)


@pytest.fixture(scope="module")
def frame_3bpa(shared_data: Path) -> Atoms:
    atoms = ase.io.read(shared_data / "3bpa" / "train_300K.xyz", index=0)
    atoms.calc = None
    return atoms


def periodic_structure() -> Atoms:
    """A distorted, triclinic two-species cell (every stress component non-zero)."""
    atoms = bulk("NaCl", "rocksalt", a=5.2) * (1, 1, 2)
    rng = np.random.default_rng(3)
    atoms.set_cell(atoms.cell[:] + rng.normal(scale=0.15, size=(3, 3)), scale_atoms=True)
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    return atoms


def test_results_equal_the_model_on_its_own_graph(molecule_model, frame_3bpa: Atoms) -> None:
    atoms = frame_3bpa.copy()
    atoms.calc = EquimolCalculator(model=molecule_model)
    graph = atoms_to_graph(atoms, molecule_model.radial_cutoff, torch.float64)
    direct = molecule_model(graph)
    # same model, same graph up to edge order: float64 summation-order differences only (1e-10 eV)
    assert atoms.get_potential_energy() == pytest.approx(float(direct["energy"]), abs=1e-10)
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    np.testing.assert_allclose(atoms.get_forces(), direct["forces"].detach().numpy(), atol=1e-10)
    energies = atoms.get_potential_energies()
    assert energies.shape == (len(atoms),)
    assert energies.sum() == pytest.approx(atoms.get_potential_energy(), abs=1e-10)


def test_forces_are_the_negative_energy_gradient(molecule_model, frame_3bpa: Atoms) -> None:
    """Central differences, step 1e-4 Å: truncation error ~h^2 |E'''| ~ 1e-7 eV/Å, so 1e-6 eV/Å tolerance."""
    atoms = frame_3bpa.copy()
    atoms.calc = EquimolCalculator(model=molecule_model)
    forces = atoms.get_forces()
    step = 1e-4
    for atom, axis in [(0, 0), (5, 1), (20, 2)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.calc = atoms.calc
            moved.positions[atom, axis] += sign * step
            energies.append(moved.get_potential_energy())
        assert -(energies[0] - energies[1]) / (2 * step) == pytest.approx(forces[atom, axis], abs=1e-6)


def test_stress_equals_the_strain_derivative_of_the_energy_over_the_volume() -> None:
    """sigma_ab = (1/V) dE/d(eps_ab) for x -> x (I + eps), eps symmetric, central differences with step 1e-5:
    truncation error ~1e-10 eV, relative rounding ~1e-16 E / 1e-5; tolerance 1e-7 eV/Å^3 (stresses ~1e-2)."""
    model = small_model(["Na", "Cl"], seed=1)
    atoms = periodic_structure()
    atoms.calc = EquimolCalculator(model=model)
    stress = atoms.get_stress(voigt=False)
    assert np.abs(stress).max() > 1e-4  # a non-trivial check
    volume = atoms.get_volume()
    step = 1e-5
    numerical = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1, -1):
                strain = np.zeros((3, 3))
                strain[a, b] += 0.5 * sign * step
                strain[b, a] += 0.5 * sign * step
                strained = atoms.copy()
                strained.set_cell(atoms.cell[:] @ (np.eye(3) + strain), scale_atoms=True)
                strained.calc = atoms.calc
                energies.append(strained.get_potential_energy())
            numerical[a, b] = (energies[0] - energies[1]) / (2 * step) / volume
    np.testing.assert_allclose(stress, numerical, atol=1e-7)
    np.testing.assert_allclose(stress, stress.T, atol=1e-12)
    # ASE's own finite-difference stress and the Voigt order (xx, yy, zz, yz, xz, xy)
    voigt = atoms.get_stress()
    np.testing.assert_allclose(voigt, stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]], atol=0)
    np.testing.assert_allclose(atoms.calc.calculate_numerical_stress(atoms, d=1e-5), voigt, atol=1e-7)


def test_stress_of_a_molecule_is_not_implemented(molecule_model, frame_3bpa: Atoms) -> None:
    atoms = frame_3bpa.copy()
    atoms.calc = EquimolCalculator(model=molecule_model)
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        atoms.get_stress()


def test_unknown_element_is_a_clear_error(molecule_model) -> None:
    atoms = Atoms("CH3Cl", positions=np.random.default_rng(0).normal(size=(5, 3)))
    atoms.calc = EquimolCalculator(model=molecule_model)
    with pytest.raises(ValueError, match=r"\['Cl'\] are not among the model's species \['H', 'C', 'N', 'O'\]"):
        atoms.get_potential_energy()


def test_neighbor_list_is_rebuilt_only_when_needed(molecule_model, frame_3bpa: Atoms) -> None:
    skin = 0.5
    atoms = frame_3bpa.copy()
    calculator = EquimolCalculator(model=molecule_model, skin=skin)
    fresh = EquimolCalculator(model=molecule_model, skin=0.0)  # rebuilds at every call
    atoms.calc = calculator
    rng = np.random.default_rng(0)

    def check_against_fresh() -> None:
        reference = atoms.copy()
        reference.calc = fresh
        # the skin list, cut to the cutoff, has the same pairs as a fresh list: equal up to summation order
        assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-10)

    check_against_fresh()
    assert calculator.neighbor_list_builds == 1
    for _ in range(3):  # moves below skin / 2 per atom: the list is reused
        atoms.positions += rng.uniform(-1, 1, size=atoms.positions.shape) * 0.05
        check_against_fresh()
    assert calculator.neighbor_list_builds == 1
    atoms.positions[3] += [0.3, 0.0, 0.0]  # more than skin / 2 from where the list was built
    check_against_fresh()
    assert calculator.neighbor_list_builds == 2
    atoms.set_atomic_numbers(np.roll(atoms.get_atomic_numbers(), 1))
    check_against_fresh()
    assert calculator.neighbor_list_builds == 3
    atoms.set_cell(np.eye(3) * 30.0)
    atoms.pbc = True
    check_against_fresh()
    assert calculator.neighbor_list_builds == 4


def test_model_file_and_dtype(molecule_model, frame_3bpa: Atoms, tmp_path: Path) -> None:
    path = export_model(molecule_model, tmp_path / "model.pt")
    atoms = frame_3bpa.copy()
    atoms.calc = EquimolCalculator(model=molecule_model)
    reference = atoms.get_forces()
    atoms.calc = EquimolCalculator(model=path)
    np.testing.assert_array_equal(atoms.get_forces(), reference)
    atoms.calc = EquimolCalculator(model=str(path), dtype="float32")
    assert atoms.calc.dtype == torch.float32
    # float32 forces: ~1e-7 relative rounding over 27 atoms and two layers; 1e-4 eV/Å is ample
    np.testing.assert_allclose(atoms.get_forces(), reference, atol=1e-4)
    EquimolCalculator(model=molecule_model, dtype="float32")
    assert molecule_model.dtype == torch.float64  # the caller's module is not cast
    with pytest.raises(TypeError, match="model file path or an nn.Module"):
        EquimolCalculator(model=42)


def test_bfgs_relaxes_a_perturbed_3bpa_frame(molecule_model, frame_3bpa: Atoms) -> None:
    """Untrained model (see the module docstring): BFGS must reach fmax < 0.01 eV/Å, downhill."""
    from ase.optimize import BFGS

    atoms = frame_3bpa.copy()
    atoms.positions += np.random.default_rng(1).normal(scale=0.05, size=atoms.positions.shape)
    atoms.calc = EquimolCalculator(model=molecule_model)
    start = atoms.get_potential_energy()
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() > 0.05  # far from converged at the start
    optimizer = BFGS(atoms, logfile=None)
    assert optimizer.run(fmax=0.01, steps=1000)
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.01
    assert atoms.get_potential_energy() < start


def test_fire_relaxes(molecule_model, frame_3bpa: Atoms) -> None:
    from ase.optimize import FIRE

    atoms = frame_3bpa.copy()
    atoms.calc = EquimolCalculator(model=molecule_model)
    start = atoms.get_potential_energy()
    assert FIRE(atoms, logfile=None).run(fmax=0.02, steps=1000)
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.02
    assert atoms.get_potential_energy() < start


def test_nve_conserves_energy_and_langevin_runs(molecule_model, frame_3bpa: Atoms) -> None:
    """Velocity Verlet, 0.5 fs, 200 steps (0.1 ps) from 300 K. Its total energy oscillates by O(dt^2) without
    drifting; a force inconsistent with the energy (or a stale neighbor list) gives errors of order the
    per-step work, ~1e-2 eV. Measured spread here: see the assertion message; tolerance 5e-3 eV."""
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    atoms = frame_3bpa.copy()
    atoms.calc = EquimolCalculator(model=molecule_model)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    totals = []
    dynamics.attach(lambda: totals.append(atoms.get_total_energy()), interval=1)
    dynamics.run(200)
    spread = max(totals) - min(totals)
    assert spread < 5e-3, f"total energy spread {spread:.2e} eV"
    Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.01, rng=np.random.default_rng(0)).run(20)
    assert np.isfinite(atoms.get_potential_energy())
