"""Per-atom virials (``Potential(compute_virials=True)``), the calculator's ``stresses`` and TorchSim's slots.

Convention (:mod:`equimol.models.potential`): each edge's ``-r_e (x) dE/dr_e`` is split half to each
end; ASE's ``stresses`` are ``-sym(W_i) / V`` with ``V`` the cell volume, so they sum to ``stress``.
Tolerances: sums and equalities of float64 results 1e-12 relative to the largest component (round-off
of sums over a few hundred edges); switching per-atom virials on changes nothing else (bitwise).
LAMMPS's ``compute stress/atom`` under ``pair_style equimol`` is checked against these values in
tests/test_lammps_plugin.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_sim as ts
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from test_calculator import one_thread, periodic_structure, small_model  # noqa: F401 (one_thread: autouse)

from equimol.calculator import EquimolCalculator
from equimol.graph import atoms_to_graph
from equimol.pt2_model import compile_model, load_compiled
from equimol.torchsim import EquimolModel

VOIGT = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])  # ASE order xx yy zz yz xz xy


@pytest.fixture(scope="module")
def models() -> dict:
    species = ["Na", "Cl", "Cu", "Au"]
    return {
        "plain": small_model(species, energy_scale=5.0).eval(),
        "zbl": small_model(species, energy_scale=5.0, pair_repulsion="zbl").eval(),
    }


def structures() -> list[Atoms]:
    """A triclinic NaCl-like box (every stress component non-zero) and a 9-atom cluster cut from it."""
    box = periodic_structure()
    cluster = Atoms(box.numbers[:9], box.positions[:9])
    return [box, cluster]


def scale(array: np.ndarray) -> float:
    return float(np.abs(array).max())


@pytest.mark.parametrize("kind", ["plain", "zbl"])
def test_virials_change_nothing_else_and_sum_to_the_virial(models, kind):
    model = models[kind]
    for atoms in structures():
        graph = atoms_to_graph(atoms, model.radial_cutoff, torch.float64)
        periodic = bool(atoms.pbc.any())
        before = model(graph, compute_stress=periodic)
        after = model(graph, compute_stress=periodic, compute_virials=True)
        for key in before:
            assert torch.equal(before[key], after[key]), key
        virial = after["atom_virial"].detach().sum(dim=0).numpy()
        if periodic:  # W = -V sigma
            expected = -atoms.get_volume() * after["stress"].detach()[0].numpy()
        else:  # W = sum_k x_k (x) F_k
            expected = atoms.positions.T @ after["forces"].detach().numpy()
        assert scale(expected) > 1e-2
        assert scale(virial - expected) < 1e-12 * scale(expected)


def test_a_dimer_splits_its_virial_evenly(models):
    """Cu-Au: the two directed edges carry different gradients, but each edge is split half to each end."""
    dimer = Atoms("CuAu", positions=[[0.0, 0.0, 0.0], [1.9, 0.6, -0.3]])
    graph = atoms_to_graph(dimer, 4.0, torch.float64)
    virials = models["plain"](graph, compute_virials=True)["atom_virial"].detach().numpy()
    assert scale(virials[0]) > 1e-5
    assert scale(virials[0] - virials[1]) < 1e-14


def test_calculator_stresses_sum_to_the_stress_and_follow_the_atoms(models):
    atoms = structures()[0]
    atoms.calc = EquimolCalculator(models["zbl"])
    stresses, stress = atoms.get_stresses(), atoms.get_stress()
    assert stresses.shape == (len(atoms), 6)
    assert scale(stresses.sum(axis=0) - stress) < 1e-12 * scale(stress)
    shifted = atoms.copy()  # a rigid translation, wrapped into the cell, moves nobody's neighbours
    shifted.positions += [1.3, -0.4, 2.2]
    shifted.wrap()
    shifted.calc = EquimolCalculator(models["zbl"])
    assert scale(shifted.get_stresses() - stresses) < 1e-12 * scale(stresses)
    committee = atoms.copy()
    committee.calc = EquimolCalculator([models["zbl"], models["zbl"]])
    assert scale(committee.get_stresses() - stresses) < 1e-14
    cluster = structures()[1]
    cluster.calc = EquimolCalculator(models["plain"])
    with pytest.raises(PropertyNotImplementedError, match="stresses needs a periodic structure"):
        cluster.get_stresses()


def test_torchsim_per_atom_energies_and_stresses_equal_the_calculator(models):
    boxes = [periodic_structure(), periodic_structure().repeat((1, 2, 1))]
    wrapped = EquimolModel(models["plain"], per_atom_energies=True, per_atom_stresses=True)
    out = wrapped(ts.io.atoms_to_state(boxes, "cpu", torch.float64))
    start = 0
    for system, atoms in enumerate(boxes):
        atoms.calc = EquimolCalculator(models["plain"])
        rows = slice(start, start + len(atoms))
        stresses = out["stresses"][rows].numpy()
        assert scale(stresses[:, VOIGT[0], VOIGT[1]] - atoms.get_stresses()) < 1e-12 * scale(atoms.get_stresses())
        assert scale(stresses.sum(axis=0) - out["stress"][system].numpy()) < 1e-12 * scale(stresses)
        assert scale(out["energies"][rows].numpy() - atoms.get_potential_energies()) < 1e-12
        start += len(atoms)


def test_a_compiled_model_file_serves_stresses(models, tmp_path):
    model = small_model(["Na", "Cl"], num_layers=1, energy_scale=5.0).eval()
    compiled = load_compiled(compile_model(model, tmp_path / "model.pt2", mode="export"))
    atoms = structures()[0]
    results = []
    for candidate in (model, compiled):
        atoms.calc = EquimolCalculator(candidate)
        results.append(atoms.get_stresses())
    assert scale(results[1] - results[0]) < 1e-12 * scale(results[0])
