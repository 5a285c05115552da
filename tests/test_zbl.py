"""ZBL pair repulsion (``model.pair_repulsion: zbl``, :mod:`equimol.nn.zbl`).

Tolerances and why:

* finite differences (float64, central, step 1e-5 Å or 1e-5 strain): truncation error ``h^2 E''' / 6``
  and rounding ``eps |E| / h``; with close contacts |E| reaches ~1e3 eV, so rounding is ~2e-8 eV/Å
  against forces of 10..1e3 eV/Å. The check is relative to the largest force (stress) component,
  ``<= 1e-6``, with no absolute floor: the structures are chosen so that that scale is >= 10 eV/Å.
* smoothness: the switch is quintic, so across ``r_in``/``r_out`` the jumps of ``E``, ``E'`` and ``E''``
  between ``r -+ delta`` shrink like ``delta`` (the next derivative is bounded): going from
  ``delta = 1e-4`` to ``1e-5`` Å each jump must shrink at least 6.7-fold. A derivative that jumps
  (e.g. a C^1-only, cubic switch: ``E''`` jumps) keeps its jump and fails.
* NVE: velocity Verlet, dt = 0.02 fs, two C atoms fired at each other with 250 eV of kinetic energy (closest
  approach 0.37 Å, inside the inner switch radius 0.46 Å):
  total energy drift ``<= 1e-3`` of the kinetic energy (measured 3.2e-4: 7.9e-2 eV).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.data import atomic_numbers, covalent_radii
from ase.md.verlet import VelocityVerlet
from test_model_structures import RADIAL_CUTOFF, SPECIES, graph_of, single_thread, tiny_config  # noqa: F401

from equimol.calculator import EquimolCalculator
from equimol.models import build_model
from equimol.nn.embedding import parse_species
from equimol.nn.zbl import COULOMB_CONSTANT, INNER_FRACTION, OUTER_FRACTION, ZBLRepulsion

PAIRS = [("H", "H"), ("C", "O"), ("Na", "O"), ("Cu", "Au")]
NUMBERS = parse_species(SPECIES)
_MODELS: dict = {}


def zbl_model(**overrides):
    """Tiny float64 model with ZBL (cached); SPE off so that two isolated atoms are cheap."""
    key = repr(sorted(overrides.items()))
    if key not in _MODELS:
        config = tiny_config(pair_repulsion="zbl", spe={"enabled": False}, **overrides)
        _MODELS[key] = build_model(config).eval()
    return _MODELS[key]


def _module() -> ZBLRepulsion:
    return ZBLRepulsion(NUMBERS, RADIAL_CUTOFF)


def _pair(module: ZBLRepulsion, a: str, b: str, lengths: torch.Tensor) -> torch.Tensor:
    i, j = NUMBERS.index(atomic_numbers[a]), NUMBERS.index(atomic_numbers[b])
    index = torch.full_like(lengths, 0, dtype=torch.long)
    return module.pair_energy(lengths, index + i, index + j)


def _covalent_sum(a: str, b: str) -> float:
    return covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]]


def _dimer(a: str, b: str, distance: float) -> Atoms:
    return Atoms(f"{a}{b}", positions=[[0.0, 0.0, 0.0], [distance, 0.0, 0.0]])


@pytest.mark.parametrize("a,b", PAIRS)
def test_pair_energy_never_decreases_as_atoms_approach(a, b):
    lengths = torch.linspace(0.05, RADIAL_CUTOFF, 2000, dtype=torch.float64)
    energy = _pair(_module(), a, b, lengths)
    outer = min(OUTER_FRACTION * _covalent_sum(a, b), RADIAL_CUTOFF)
    inside = lengths < outer
    assert bool((energy[inside] > 0).all()) and bool((energy[~inside] == 0).all())
    assert bool((energy[inside].diff() < 0).all()), f"{a}{b}: ZBL energy not strictly rising as r shrinks"


def test_short_range_limit_is_the_bare_coulomb_repulsion():
    # phi(0) = 1: r E(r) -> k_e Z1 Z2 as r -> 0 (checks the prefactor and the coefficients' sum)
    r = torch.tensor([1e-7], dtype=torch.float64)
    for a, b in PAIRS:
        value = float(r * _pair(_module(), a, b, r))
        expected = COULOMB_CONSTANT * atomic_numbers[a] * atomic_numbers[b]
        assert value == pytest.approx(expected, rel=1e-5), (a, b)


@pytest.mark.parametrize("a,b", PAIRS)
def test_model_energy_rises_monotonically_as_two_atoms_approach(a, b):
    # inside the inner switch radius the full ZBL term dominates the (random, tiny) learned part
    model = zbl_model()
    inner = INNER_FRACTION * _covalent_sum(a, b)
    distances = np.linspace(inner, 0.1, 15)
    energies = []
    for distance in distances:
        with torch.no_grad():
            energies.append(float(model(graph_of(_dimer(a, b, distance)), compute_forces=False)["energy"]))
    assert np.all(np.diff(energies) > 0), f"{a}{b}: {energies}"


def _derivatives(module: ZBLRepulsion, a: str, b: str, r: float) -> np.ndarray:
    length = torch.tensor([r], dtype=torch.float64, requires_grad=True)
    energy = _pair(module, a, b, length).sum()
    (first,) = torch.autograd.grad(energy, length, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), length)
    return np.array([energy.item(), first.item(), second.item()])


@pytest.mark.parametrize("a,b", PAIRS)
def test_energy_is_c2_at_the_switch_radii(a, b):
    module = _module()
    outer = min(OUTER_FRACTION * _covalent_sum(a, b), RADIAL_CUTOFF)
    for radius in (min(INNER_FRACTION * _covalent_sum(a, b), outer), outer):
        jumps = []
        for delta in (1e-4, 1e-5):
            below, above = _derivatives(module, a, b, radius - delta), _derivatives(module, a, b, radius + delta)
            jumps.append(np.abs(below - above))
        # continuous E, E', E'': each jump shrinks (at least) in proportion to delta
        assert np.all(jumps[1] <= 0.15 * jumps[0] + 1e-12), f"{a}{b} at r={radius:.3f}: jumps {jumps}"
    assert np.all(_derivatives(module, a, b, outer + 1e-9) == 0.0)


def test_model_energy_is_smooth_where_switch_meets_the_cutoff():
    # zbl_outer at the radial cutoff: ZBL and the learned part both vanish there, C^2
    model = zbl_model(zbl_inner=1.0, zbl_outer=RADIAL_CUTOFF)
    delta = 1e-6
    values = {}
    for sign in (-1, 1):
        graph = graph_of(_dimer("C", "O", RADIAL_CUTOFF + sign * delta))
        output = model(graph)
        values[sign] = (float(output["energy"]), float(output["forces"][1, 0]))
    assert values[1][1] == 0.0  # beyond the cutoff: no edge, no force
    assert abs(values[-1][0] - values[1][0]) < 1e-9
    assert abs(values[-1][1]) < 1e-7


def _close_contact_structures() -> dict[str, Atoms]:
    # contacts at 0.3 to 0.55 of the covalent sums: inside the default switches
    molecule = Atoms(
        "CHHON",
        positions=0.6 * np.array([[0, 0, 0], [0.55, 0.1, 0.0], [-0.3, 0.6, 0.2], [0.2, -0.1, 0.9], [-0.7, -0.5, -0.3]]),
    )
    crystal = Atoms(
        "CuAuCuO",
        scaled_positions=[[0, 0, 0], [0.27, 0.22, 0.05], [0.5, 0.55, 0.45], [0.6, 0.2, 0.7]],
        cell=[[3.0, 0.2, 0.0], [0.1, 2.9, 0.3], [0.0, 0.4, 3.2]],
        pbc=True,
    )
    return {"molecule": molecule, "periodic": crystal}


def _energy(model, atoms: Atoms) -> float:
    with torch.no_grad():
        return float(model(graph_of(atoms), compute_forces=False)["energy"])


@pytest.mark.parametrize("name", ["molecule", "periodic"])
def test_forces_and_stress_match_finite_differences(name):
    model = zbl_model()
    atoms = _close_contact_structures()[name]
    output = model(graph_of(atoms), compute_stress=atoms.pbc.any())
    forces = output["forces"].detach().numpy()
    plain = build_model(tiny_config(spe={"enabled": False})).eval()
    zbl_forces = forces - plain(graph_of(atoms))["forces"].detach().numpy()
    assert np.abs(zbl_forces).max() > 10.0, "the structure must put atoms inside the ZBL switch"
    step = 1e-5
    reference = np.zeros_like(forces)
    for atom in range(len(atoms)):
        for axis in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[atom, axis] += step
            minus.positions[atom, axis] -= step
            reference[atom, axis] = -(_energy(model, plus) - _energy(model, minus)) / (2 * step)
    error = np.abs(forces - reference).max() / np.abs(forces).max()
    assert error <= 1e-6, f"{name}: relative FD force error {error:.2e}"
    if not atoms.pbc.any():
        return
    stress = output["stress"].detach().numpy().reshape(3, 3)
    reference = np.zeros((3, 3))
    volume = atoms.get_volume()
    for i in range(3):
        for j in range(3):
            strained = []
            for sign in (1, -1):
                strain = np.eye(3)
                strain[i, j] += sign * step * 0.5
                strain[j, i] += sign * step * 0.5
                moved = atoms.copy()
                moved.set_cell(atoms.cell[:] @ strain, scale_atoms=True)
                strained.append(_energy(model, moved))
            reference[i, j] = (strained[0] - strained[1]) / (2 * step) / volume
    error = np.abs(stress - reference).max() / np.abs(stress).max()
    assert np.abs(stress).max() > 1.0 and error <= 1e-6, f"relative FD stress error {error:.2e}"


@pytest.mark.parametrize("backend", ["cg", "gaunt", "cp"])
def test_every_backend_adds_the_same_pair_energy(backend):
    atoms = _close_contact_structures()["molecule"]
    graph = graph_of(atoms)
    config = tiny_config(spe={"enabled": False}, many_body="none", tp_backend=backend)
    plain = build_model(config).eval()
    repulsive = build_model({**config, "pair_repulsion": "zbl"}).eval()
    difference = float(repulsive(graph)["energy"] - plain(graph)["energy"])
    sender, receiver = graph.edge_index
    lengths = (graph.pos[receiver] - graph.pos[sender]).norm(dim=-1)
    index = repulsive.species_index(graph.atomic_numbers)
    expected = 0.5 * float(_module().pair_energy(lengths, index[sender], index[receiver]).sum())
    assert expected > 10.0
    assert difference == pytest.approx(expected, rel=1e-12)


def test_nve_through_a_close_contact_conserves_energy():
    model = zbl_model()
    atoms = _dimer("C", "C", 3.0)
    atoms.center(vacuum=5.0)
    atoms.calc = EquimolCalculator(model)
    kinetic = 250.0  # eV, shared equally: head-on, centre of mass at rest
    speed = math.sqrt(kinetic / atoms.get_masses()[0])  # (eV/amu)^1/2, ASE's velocity unit
    atoms.set_velocities([[speed, 0, 0], [-speed, 0, 0]])
    start = atoms.get_potential_energy() + atoms.get_kinetic_energy()
    closest, energies = np.inf, []
    dynamics = VelocityVerlet(atoms, timestep=0.02 * units.fs)
    for _ in range(40):
        dynamics.run(10)
        closest = min(closest, atoms.get_distance(0, 1))
        energies.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
    inner = INNER_FRACTION * _covalent_sum("C", "C")  # pure ZBL inside
    assert closest < inner, f"no close contact (closest approach {closest:.2f} Å)"
    assert atoms.get_distance(0, 1) > 2.0, "the atoms did not bounce back"
    drift = np.abs(np.array(energies) - start).max()
    print(f"closest approach {closest:.3f} Å, max energy deviation {drift:.2e} eV")
    assert drift <= 1e-3 * kinetic, f"energy drift {drift:.2e} eV"


def test_model_files_before_format_3_keep_the_old_switch_radii(tmp_path):
    # Files of format <= 2 were written when the switch ran from 0.5 to 1.0 of the covalent sum; their
    # configs have no zbl_*_fraction keys and load with those radii (a C-O pair at 1.0 Å still repels).
    from equimol.export import export_model, load_model

    old = zbl_model(zbl_inner_fraction=0.5, zbl_outer_fraction=1.0)
    path = export_model(old, tmp_path / "old.pt")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 2
    for key in ("zbl_inner_fraction", "zbl_outer_fraction"):
        del payload["model_config"][key]
    torch.save(payload, path)
    loaded = load_model(path)
    assert (loaded.config.zbl_inner_fraction, loaded.config.zbl_outer_fraction) == (0.5, 1.0)
    graph = graph_of(_dimer("C", "O", 1.0))
    assert torch.equal(loaded(graph)["energy"], old(graph)["energy"])
    assert float(loaded(graph)["energy"] - zbl_model()(graph)["energy"]) > 1.0


@pytest.mark.parametrize(
    "keys,message",
    [
        ({"zbl_outer_fraction": 0.0}, "zbl_outer_fraction"),
        ({"zbl_inner_fraction": 0.6, "zbl_outer_fraction": 0.5}, "zbl_inner_fraction"),
        ({"zbl_inner_fraction": "half"}, "zbl_inner_fraction"),
    ],
)
def test_bad_switch_fractions_name_the_key(keys, message):
    from equimol.models.config import ModelConfig

    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict(tiny_config(pair_repulsion="zbl", **keys))
