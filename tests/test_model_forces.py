"""Forces and stress against central finite differences of the energy, SPE on, both modes and dtypes.

Tolerances and why:

* float64 forces: ``max |F_autograd - F_fd| <= 1e-6 max |F| + 10 eps64 |E| / h`` on 6 random coordinates
  per structure. The second term is the rounding error of central differences, ``eps |E| / h`` with
  step ``h = 1e-5`` Å (4e-9 eV/Å for the 3BPA frame, |E| ~ 190 eV with the random tiny model); it
  alone bounds the check where symmetry makes every force vanish (perfect fcc crystal, |F| ~ 1e-16;
  a non-vanishing SPE gradient there is checked in ``test_spe.py``). Truncation error ``h^2 E''' / 6``
  is about 1e-11 eV/Å. Measured worst (2-core CPU): 3.4e-9 (3BPA), 7e-10 (OC20), <= 8e-10
  (degenerate structures), both SPE modes. Forces scaled by 1.0001 fail for every frame with forces.
* float32: rounding error ``eps32 |E| / h`` is about 1e-3 eV/Å at any useful step, so 1e-6 relative
  is out of reach by finite differences. Instead the float32 model (the float64 model rounded, same
  seed) must give forces within ``2e-5 max |F64| + 3e-7`` eV/Å and energies within 5e-6 (relative) of
  the float64 model, which was checked against finite differences; measured worst absolute force
  differences 2.0e-6 (benzene, max |F| 0.59) and 1.5e-7 (OC20, max |F| 8.9e-3), energies 3.9e-7.
  A float32 end-to-end finite-difference check (step 1e-2 Å) asserts ``3 eps32 |E| / h``, its
  rounding bound (measured 0.3 to 1.0 of ``eps32 |E| / h``), and that this bound is below half the
  largest checked force, so that zeroed forces fail (every frame but the fcc crystal, whose forces vanish).
* stress: ``max |sigma - sigma_fd| <= 1e-6 max |sigma|`` with strain step 1e-5 (same reasoning), and
  against ASE's own numerical stress (``Atoms.get_stress`` convention: positive = tensile).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.calculators.calculator import Calculator, all_changes
from test_model_structures import (  # noqa: F401  (single_thread: autouse fixture)
    ALL_STRUCTURES,
    build_structure,
    graph_of,
    single_thread,
    tiny_model,
)

STEP = 1e-5
FORCE_TOL = 1e-6
EPS64 = float(torch.finfo(torch.float64).eps)
EPS32 = float(torch.finfo(torch.float32).eps)


def _fd_tolerance(forces: torch.Tensor, energy: float) -> float:
    """``1e-6 max |F| + 10 eps64 |E| / h`` (eV/Å): relative to the forces, plus the rounding of the differences."""
    return FORCE_TOL * float(forces.abs().max()) + 10 * EPS64 * abs(energy) / STEP


def _energy_at(model, graph, positions: torch.Tensor) -> float:
    moved = graph.clone()
    moved.pos = positions
    with torch.no_grad():
        return float(model(moved, compute_forces=False)["energy"].sum())


def _finite_difference_forces(model, graph, coordinates, step: float = STEP) -> torch.Tensor:
    values = []
    for atom, axis in coordinates:
        plus = graph.pos.clone()
        plus[atom, axis] += step
        minus = graph.pos.clone()
        minus[atom, axis] -= step
        values.append(-(_energy_at(model, graph, plus) - _energy_at(model, graph, minus)) / (2 * step))
    return torch.tensor(values, dtype=torch.float64)


def _coordinates(num_atoms: int, count: int = 6, seed: int = 0) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    flat = rng.choice(num_atoms * 3, size=min(count, num_atoms * 3), replace=False)
    return [(int(i) // 3, int(i) % 3) for i in flat]


def _fd_error_and_tolerance(model, graph) -> tuple[float, float]:
    """Largest |model force - central finite difference| over the sampled coordinates, and its tolerance (eV/Å)."""
    output = model(graph)
    forces = output["forces"].detach()
    assert torch.isfinite(forces).all()
    coordinates = _coordinates(graph.num_nodes)
    reference = _finite_difference_forces(model, graph, coordinates)
    computed = torch.stack([forces[atom, axis] for atom, axis in coordinates])
    return float((computed - reference).abs().max()), _fd_tolerance(forces, float(output["energy"].sum()))


@pytest.mark.parametrize("mode", ["exact", "chebyshev"])
@pytest.mark.parametrize("name", ALL_STRUCTURES)
def test_forces_match_finite_differences_float64(name, mode, shared_data):
    model = tiny_model(spe={"mode": mode})
    graph = graph_of(build_structure(name, shared_data))
    error, tolerance = _fd_error_and_tolerance(model, graph)
    assert error <= tolerance, f"{name}/{mode}: FD error {error:.3e} > {tolerance:.3e} eV/Å"


@pytest.mark.parametrize("mode", ["exact", "chebyshev"])
@pytest.mark.parametrize("name", ALL_STRUCTURES)
def test_float32_forces_match_float64(name, mode, shared_data):
    atoms = build_structure(name, shared_data)
    model64 = tiny_model(spe={"mode": mode})
    model32 = tiny_model(spe={"mode": mode}, dtype="float32")
    assert model32.dtype == torch.float32
    assert torch.get_default_dtype() == torch.float32  # building a float64 model left the global default alone
    out64 = model64(graph_of(atoms, torch.float64))
    out32 = model32(graph_of(atoms, torch.float32))
    assert out32["forces"].dtype == torch.float32 and torch.isfinite(out32["forces"]).all()
    # absolute 3e-7 eV/Å: float32 rounding where forces are small or vanish (fcc); measured <= 1.5e-7 there
    tolerance = 2e-5 * float(out64["forces"].abs().max()) + 3e-7
    error = float((out32["forces"].double() - out64["forces"]).abs().max())
    assert error <= tolerance, f"{name}/{mode}: float32 vs float64 force error {error:.3e} > {tolerance:.3e}"
    energy_error = (out32["energy"].double() - out64["energy"]).abs().max() / out64["energy"].abs().max()
    assert energy_error <= 5e-6


@pytest.mark.parametrize("mode", ["exact", "chebyshev"])
@pytest.mark.parametrize("name", ALL_STRUCTURES)
def test_forces_match_finite_differences_float32(name, mode, shared_data):
    """Float32 end to end (graph, model, finite differences): a coarse check that catches gross errors.

    Step 1e-2 Å; the error is rounding-dominated (``eps32 |E| / h``, it grows as the step shrinks):
    measured 2.0e-3 eV/Å (3BPA, |E| 187 eV) down to 1.2e-4 eV/Å (OC20, |E| 23 eV). Asserted:
    ``3 eps32 |E| / h``, which must be below half the largest checked force (see the module docstring).
    """
    model = tiny_model(spe={"mode": mode}, dtype="float32")
    graph = graph_of(build_structure(name, shared_data), torch.float32)
    output = model(graph)
    forces = output["forces"].detach()
    assert forces.dtype == torch.float32 and torch.isfinite(forces).all()
    coordinates = _coordinates(graph.num_nodes)
    step = 1e-2
    reference = _finite_difference_forces(model, graph, coordinates, step=step)
    computed = torch.stack([forces[atom, axis] for atom, axis in coordinates]).double()
    tolerance = 3 * EPS32 * abs(float(output["energy"].sum())) / step
    if name != "cu_fcc":  # the perfect crystal's forces vanish by symmetry: nothing to resolve
        assert tolerance < 0.5 * float(reference.abs().max()), f"{name}: float32 FD cannot resolve these forces"
    assert (computed - reference).abs().max() <= tolerance


def _strained_energy(model, atoms, strain: np.ndarray) -> float:
    strained = atoms.copy()
    strained.set_cell(atoms.cell[:] @ (np.eye(3) + strain), scale_atoms=True)
    with torch.no_grad():
        return float(model(graph_of(strained), compute_forces=False)["energy"].sum())


def _strain_finite_difference_stress(model, atoms) -> np.ndarray:
    """Central differences of the energy in each symmetric strain component over the volume: ``[3, 3]`` eV/Å³."""
    reference = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            strain = np.zeros((3, 3))
            strain[i, j] = strain[j, i] = 0.5 * STEP if i != j else STEP
            plus = _strained_energy(model, atoms, strain)
            minus = _strained_energy(model, atoms, -strain)
            reference[i, j] = (plus - minus) / (2 * STEP * atoms.get_volume())
    return reference


@pytest.mark.parametrize("mode", ["exact", "chebyshev"])
def test_stress_matches_strain_finite_differences(mode):
    atoms = build_structure("cu_fcc")
    atoms.rattle(0.05, seed=3)  # break the symmetry so every stress component is non-trivial
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + np.array([[0.01, 0.02, 0], [0.02, -0.01, 0.01], [0, 0.01, 0.0]])))
    model = tiny_model(spe={"mode": mode})
    stress = model(graph_of(atoms), compute_stress=True)["stress"][0].detach().numpy()
    reference = _strain_finite_difference_stress(model, atoms)
    scale = np.abs(stress).max()
    assert scale > 1e-4
    assert np.abs(stress - stress.T).max() < 1e-12
    assert np.abs(stress - reference).max() <= 1e-6 * scale


class _ModelCalculator(Calculator):
    """Minimal ASE calculator around the model, to compare with ASE's own numerical stress."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model):
        super().__init__()
        self.model = model

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        out = self.model(graph_of(self.atoms), compute_stress=True)
        stress = out["stress"][0].detach().numpy()
        self.results = {
            "energy": float(out["energy"][0]),
            "free_energy": float(out["energy"][0]),
            "forces": out["forces"].detach().numpy(),
            "stress": stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]],  # Voigt xx yy zz yz xz xy
        }


def test_stress_sign_matches_ase_numerical_stress():
    atoms = build_structure("cu_fcc")
    atoms.rattle(0.05, seed=5)
    atoms.calc = _ModelCalculator(tiny_model())
    analytic = atoms.get_stress(voigt=True)
    numerical = atoms.calc.calculate_numerical_stress(atoms, d=1e-5, voigt=True)
    assert np.abs(analytic - numerical).max() <= 1e-6 * np.abs(analytic).max()


def test_stress_is_zero_without_periodicity():
    out = tiny_model()(graph_of(build_structure("ch4")), compute_stress=True)
    assert torch.equal(out["stress"], torch.zeros(1, 3, 3, dtype=torch.float64))


@pytest.mark.parametrize("many_body", ["none", "gaunt"])
def test_forces_match_finite_differences_other_many_body_options(many_body):
    """The FD check of the CG many-body default above, repeated without a many-body block and with Gaunt's."""
    model = tiny_model(many_body=many_body, spe={"mode": "exact"})
    graph = graph_of(build_structure("benzene"))
    error, tolerance = _fd_error_and_tolerance(model, graph)
    assert error <= tolerance, f"{many_body}: FD error {error:.3e} > {tolerance:.3e} eV/Å"


def test_stress_of_a_one_atom_cell_with_only_self_images():
    """Primitive fcc Cu: every edge joins the atom to one of its own images (a common crystal input)."""
    import ase.build

    atoms = ase.build.bulk("Cu", "fcc", a=3.55)
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + np.array([[0.02, 0.01, 0], [0.01, 0, 0], [0, 0, -0.01]])), True)
    model = tiny_model(spe={"mode": "exact"})
    out = model(graph_of(atoms), compute_stress=True)
    assert out["forces"].abs().max() < 1e-12  # translation invariance: a lone atom feels no net force
    stress = out["stress"][0].detach().numpy()
    reference = _strain_finite_difference_stress(model, atoms)
    assert np.abs(stress).max() > 1e-4
    assert np.abs(stress - reference).max() <= 1e-6 * np.abs(stress).max()
