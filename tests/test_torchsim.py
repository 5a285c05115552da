"""TorchSim (:mod:`equimol.torchsim`): batched outputs, MD and relaxation of 8 structures against the ASE calculator.

Eight structures of 4 to 32 atoms and four elements (Cu, Pd, Ag, Au), periodic; and eight
non-periodic clusters. Model: tiny random float64 potential. Tolerances (float64): energies,
forces and stress 1e-10 (one batched graph against one graph per structure: only the summation
order differs, ~1e-15 measured); positions after 10 NVE steps 1e-8 Å (same integrator, same
forces; ~1e-14 Å measured). TorchSim's FIRE is not step-for-step ASE's FIRE (1e-4 Å apart after
30 steps), so a relaxation is checked by the calculator's forces at the relaxed positions and
against relaxing each structure alone in TorchSim (batching must not change a structure's path).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_sim as ts
from ase import Atoms, units
from ase.build import bulk
from ase.geometry import find_mic
from ase.md.verlet import VelocityVerlet

from equimol.calculator import EquimolCalculator
from equimol.microbench.systems import SPECIES, periodic_structures, small_model
from equimol.torchsim import EquimolModel

FMAX = 5e-3  # eV/Å, relaxation convergence


@pytest.fixture(scope="module")
def model():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield small_model(SPECIES, energy_scale=5.0).eval()
    torch.set_num_threads(previous)


def clusters() -> list[Atoms]:
    """8 non-periodic clusters of 3 to 10 atoms cut from the periodic boxes."""
    return [Atoms(atoms.numbers[: 3 + i], atoms.positions[: 3 + i]) for i, atoms in enumerate(periodic_structures(0))]


def _reference(atoms: Atoms, model) -> Atoms:
    reference = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc, momenta=atoms.get_momenta())
    reference.calc = EquimolCalculator(model)
    return reference


@pytest.mark.parametrize("make", [periodic_structures, clusters], ids=["periodic", "clusters"])
def test_batched_outputs_equal_the_calculator_per_structure(model, make):
    structures = make()
    assert len({len(atoms) for atoms in structures}) >= 4 and len(structures) == 8
    wrapped = EquimolModel(model)
    state = ts.io.atoms_to_state(structures, wrapped.device, wrapped.dtype)
    out = wrapped(state)
    for index, atoms in enumerate(structures):
        reference = _reference(atoms, model)
        mine = (state.system_idx == index).numpy()
        assert abs(out["energy"][index].item() - reference.get_potential_energy()) < 1e-10
        np.testing.assert_allclose(out["forces"][mine].numpy(), reference.get_forces(), atol=1e-10, rtol=0)
        if atoms.pbc.all():
            stress = reference.get_stress(voigt=False)
            np.testing.assert_allclose(out["stress"][index].numpy(), stress, atol=1e-10, rtol=0)
            assert np.abs(stress).max() > 1e-5  # eV/Å³: a real stress, not zeros on both sides
        else:
            assert torch.count_nonzero(out["stress"][index]) == 0


def test_batched_nve_equals_ase_velocity_verlet(model):
    structures = periodic_structures()
    wrapped = EquimolModel(model)
    state = ts.io.atoms_to_state(structures, wrapped.device, wrapped.dtype)
    state.momenta = torch.as_tensor(np.concatenate([atoms.get_momenta() for atoms in structures]))
    timestep = torch.tensor(1.0 * units.fs, dtype=torch.float64)
    initialize, update = ts.nve(wrapped, dt=timestep, kT=torch.tensor(0.0, dtype=torch.float64))
    dynamics = initialize(state)
    for _ in range(10):
        dynamics = update(dynamics)
    for index, atoms in enumerate(structures):
        reference = _reference(atoms, model)
        VelocityVerlet(reference, timestep=1.0 * units.fs).run(10)
        mine = (dynamics.system_idx == index).numpy()
        difference, _ = find_mic(dynamics.positions[mine].numpy() - reference.positions, reference.cell, True)
        assert np.abs(reference.positions - atoms.positions).max() > 1e-2  # the atoms did move
        assert np.abs(difference).max() < 1e-8


def _relax(wrapped: EquimolModel, structures: list[Atoms]):
    state = ts.io.atoms_to_state(structures, wrapped.device, wrapped.dtype)
    converged = ts.runners.generate_force_convergence_fn(force_tol=FMAX, include_cell_forces=False)
    return ts.optimize(
        system=state, model=wrapped, optimizer=ts.optimizers.fire, convergence_fn=converged, max_steps=800
    )


def test_batched_relaxation_reaches_calculator_minima_as_if_alone(model):
    structures = periodic_structures(temperature_k=0.0)
    wrapped = EquimolModel(model)
    relaxed = _relax(wrapped, structures)
    for index, atoms in enumerate(structures):
        mine = (relaxed.system_idx == index).numpy()
        reference = _reference(atoms, model)
        reference.positions = relaxed.positions[mine].numpy()
        assert np.linalg.norm(reference.get_forces(), axis=1).max() < FMAX  # a minimum by the calculator
        assert reference.get_potential_energy() < _reference(atoms, model).get_potential_energy()
    for index in (0, 7):  # first and last: relaxed alone, each takes the same path
        alone = _relax(wrapped, [structures[index]])
        mine = (relaxed.system_idx == index).numpy()
        assert np.abs(alone.positions.numpy() - relaxed.positions[mine].numpy()).max() < 1e-8


def test_unknown_element_is_a_clear_error(model):
    wrapped = EquimolModel(model)
    state = ts.io.atoms_to_state([bulk("Fe", "bcc", a=2.9, cubic=True)], wrapped.device, wrapped.dtype)
    with pytest.raises(ValueError, match=r"atomic number\(s\) \[26\] are not among the model's species"):
        wrapped(state)


def test_readme_example_runs(model, tmp_path, monkeypatch):
    import re
    from pathlib import Path

    from equimol.export import export_model

    page = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "lammps-torchsim.md"
    text = page.read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python[^\n]*\n(.*?)```", text, flags=re.S) if "EquimolModel(" in b)
    export_model(model, tmp_path / "demo.pt")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, str(page), "exec"), namespace)  # noqa: S102 - our own docs page
    assert namespace["state"].positions.shape == (24, 3)
    assert namespace["relaxed"].positions.shape == (24, 3)
