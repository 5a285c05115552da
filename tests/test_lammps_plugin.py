"""``pair_style equimol`` (the LAMMPS plugin, ``lammps_plugin/``) on 1, 2 and 4 MPI ranks, against the calculator.

Models: a random float64 2-layer potential for H, C, N, O, Cu and Au (cutoff 4 Å; its energies reach
atoms two cutoffs away) for the trajectories, and a random float32 1-layer Cu/Au potential, each compiled
once per session with ``equimol export --format aotinductor --target lammps --threads 1`` (AOTInductor,
C++). The plugin is built by ``scripts/setup.sh`` into equimol's cache and reused (built here if missing).

Systems (tests/lammps_plugin_case.py): a rattled, triclinic 108-atom Cu/Au box, and the first
3BPA frame in a periodic 12 Å cube (it meets its own images; on 4 ranks the 6 Å sub-domains hold
fewer atoms than their ghost shells, so ghosts come from several swaps and several images).

Tolerances:

* positions after 40 NVE steps vs ASE's ``VelocityVerlet`` with the eager float64 calculator: the
  issue's 1e-6 Å (measured 1e-10 Å for Cu/Au and 8e-9 Å for the molecule, on every rank count: only
  LAMMPS's rounded unit constant ``ftm2v`` and summation order differ);
* first-step energy, forces and per-atom energies vs the calculator: 1e-10 (eV, eV/Å; measured 1e-15);
* per-atom energies sum to the energy, and ``compute stress/atom`` sums to ``-V x`` the virial
  pressure tensor: 1e-10 relative (measured 1e-15);
* the virial pressure tensor vs the calculator's stress, and ``compute stress/atom`` vs the
  calculator's per-atom ``stresses``: 2e-7 relative (LAMMPS's ``nktv2p = 1.6021765e6`` bar per eV/Å³ is
  rounded to 8 digits: measured 7.5e-8);
* float32: 1e-5 relative to the largest magnitude (float32 round-off is 6e-8 per operation).

Each rank computes each layer for its owned atoms only; a 2-layer model is exact across rank boundaries
only if the node features of ghosts come from their owners between the layers and the derivatives with
respect to them return to their owners (forward and reverse communication): with either exchange
left out, the 2- and 4-rank runs drift from the 1-rank run (checked by breaking the plugin once). The
split into per-layer programs is also checked in Python, on emulated ranks (torch.export programs, no
C++ compile).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import units
from ase.geometry import find_mic
from ase.md.verlet import VelocityVerlet
from equimol.lammps_plugin import build_plugin, plugin_path
from lammps_case import ELEMENTS, cu_au_box
from lammps_plugin_case import SPECIES, TIMESTEP_FS, run_plugin, systems
from test_calculator import one_thread, small_model  # noqa: F401 (one_thread: an autouse fixture)

from equimol.calculator import EquimolCalculator
from equimol.cli import main
from equimol.export import export_model
from equimol.lammps import create_box_from_atoms, load_lammps, plugin_commands
from equimol.pt2_model import CompiledModelError, compile_model, load_compiled
from equimol.utils.io import cache_root

ROOT = Path(__file__).resolve().parents[1]
STEPS = 40
# conftest points EQUIMOL_CACHE_DIR at a fresh folder per session; the plugin that scripts/setup.sh built
# lives in the user's cache, read here at collection time, before that fixture runs
PLUGIN_CACHE = cache_root()
LAMMPS_ORDER = [0, 1, 2, 5, 4, 3]  # ASE Voigt (xx yy zz yz xz xy) -> LAMMPS (xx yy zz xy xz yz)
NKTV2P = 1.6021765e6  # LAMMPS metal units: bar per eV/Å³


@pytest.fixture(scope="session")
def plugin() -> Path:
    return build_plugin(cache=PLUGIN_CACHE)


@pytest.fixture(scope="session")
def compiled(tmp_path_factory) -> dict:
    """The two models, their ``lammps``-target packages (one through the command line) and a default-target file."""
    previous = torch.get_num_threads()
    folder = tmp_path_factory.mktemp("plugin_models")
    model64 = small_model(SPECIES, energy_scale=5.0).eval()
    model32 = small_model([29, 79], num_layers=1, energy_scale=5.0, dtype="float32").eval()
    export_model(model64, folder / "model64.pt")
    arguments = ["export", str(folder / "model64.pt"), str(folder / "model64.pt2"), "--format", "aotinductor"]
    assert main([*arguments, "--target", "lammps", "--threads", "1"]) == 0
    compile_model(model32, folder / "model32.pt2", target="lammps")
    compile_model(model64, folder / "python.pt2", mode="export")  # the default target, for Python
    torch.set_num_threads(previous)
    return {"model64": model64, "model32": model32, "folder": folder}


@pytest.fixture(scope="module")
def references(shared_data) -> dict:
    """Per system: the calculator's first-step results and ASE VelocityVerlet's positions after 40 steps."""
    model = small_model(SPECIES, energy_scale=5.0).eval()
    out = {}
    for name, (atoms, _) in systems(shared_data).items():
        reference = atoms.copy()
        reference.calc = EquimolCalculator(model)
        first = {
            "energy": reference.get_potential_energy(),
            "energies": reference.get_potential_energies(),
            "forces": reference.get_forces(),
            "stress": reference.get_stress(),
            "stresses": reference.get_stresses(),
        }
        VelocityVerlet(reference, timestep=TIMESTEP_FS[name] * units.fs).run(STEPS)
        assert np.abs(reference.positions - atoms.positions).max() > 0.1  # the atoms did move
        out[name] = {**first, "positions": reference.positions.copy(), "atoms": reference}
    return out


def mpirun(ranks: int, plugin: Path, model: Path, shared_data: Path, output: Path) -> dict:
    launcher = Path(sys.executable).parent / "mpirun"
    script = ROOT / "tests" / "lammps_plugin_case.py"
    command = [str(launcher), "-np", str(ranks), sys.executable, str(script)]
    command += [str(plugin), str(model), str(shared_data), str(output), str(STEPS)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=ROOT, env=environment)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = np.load(output)
    assert int(result["size"]) == ranks
    return result


@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_nve_on_mpi_ranks_matches_ase_and_the_calculator(ranks, plugin, compiled, references, shared_data, tmp_path):
    result = mpirun(ranks, plugin, compiled["folder"] / "model64.pt2", shared_data, tmp_path / "run.npz")
    for name, reference in references.items():
        get = lambda key, name=name: result[f"{name}_{key}"]  # noqa: E731
        atoms = reference["atoms"]
        drift, _ = find_mic(get("positions") - reference["positions"], atoms.cell, atoms.pbc)
        assert np.abs(drift).max() < 1e-6, (name, np.abs(drift).max())
        assert abs(float(get("energy")) - reference["energy"]) < 1e-10
        assert np.abs(get("forces") - reference["forces"]).max() < 1e-10
        assert np.abs(get("energies") - reference["energies"]).max() < 1e-10
        assert abs(get("energies").sum() - float(get("energy"))) < 1e-10 * abs(float(get("energy")))
        # compute stress/atom (bar·Å³) sums to -V x the virial pressure (bar); both equal the calculator's
        volume, virial = float(get("volume")), -float(get("volume")) * get("pressure")
        scale = np.abs(virial).max()
        assert scale > 1e3  # bar·Å³: a real virial, not zeros on both sides
        assert np.abs(get("stresses").sum(axis=0) - virial).max() < 1e-10 * scale
        expected_pressure = -reference["stress"][LAMMPS_ORDER] / units.bar
        assert np.abs(get("pressure") - expected_pressure).max() < 2e-7 * np.abs(expected_pressure).max()
        stresses = get("stresses")[:, LAMMPS_ORDER] / (NKTV2P * volume)  # -> ASE's intensive eV/Å³
        assert np.abs(stresses - reference["stresses"]).max() < 2e-7 * np.abs(reference["stresses"]).max()


def open_box(atoms, elements=ELEMENTS, newton: str = "on", units_style: str = "metal"):
    lmp = load_lammps()(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    lmp.commands_string(f"units {units_style}\natom_style atomic\natom_modify map yes\nnewton {newton}")
    if units_style == "metal":
        create_box_from_atoms(lmp, atoms, elements)
    else:
        lmp.commands_string("region box block 0 10 0 10 0 10\ncreate_box 2 box\nmass * 1.0")
    return lmp


def test_float32_model_matches_the_eager_float32_model(plugin, compiled):
    """Within 1e-5 of each quantity's magnitude, or twice eager float32's own distance from float64.

    The random 1-layer model has forces of 1e-3 eV/Å beside energies of tens of eV, so float32
    forces carry errors of several 1e-5 relative in any evaluation order (as in test_export_compiled).
    """
    atoms = cu_au_box(tilt=0.1, temperature_k=0.0, repeat=3)
    result = run_plugin(plugin, compiled["folder"] / "model32.pt2", atoms, ELEMENTS, 0, 1.0)
    model64 = copy.deepcopy(compiled["model32"]).double()
    values = {}
    for name, model in (("float32", compiled["model32"]), ("float64", model64)):
        atoms.calc = EquimolCalculator(model)
        stress = -atoms.get_stress()[LAMMPS_ORDER] / units.bar
        values[name] = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(), "pressure": stress}
    for key, eager in values["float32"].items():
        floor = np.abs(np.asarray(eager) - values["float64"][key]).max()
        error = np.abs(np.asarray(result[key]) - eager).max()
        assert error <= max(1e-5 * np.abs(eager).max(), 2 * floor), (key, error, floor)


def bad_input_cases(folder: Path) -> list[tuple[str, dict, str, str]]:
    """(name, open_box options, commands after ``plugin load``, expected message) of each bad input."""
    style, coeff = f"pair_style equimol {folder}/model64.pt2", "pair_coeff * * Cu Au"
    return [
        ("missing file", {}, f"pair_style equimol {folder}/missing.pt2", "model file '.*missing.pt2' does not exist"),
        ("unknown element", {}, f"{style}\npair_coeff * * Cu Ag", r"'Ag' is not among the model's species \[H,"),
        ("type count", {}, f"{style}\npair_coeff * * Cu", r"names 1 element\(s\) \[Cu\] but the LAMMPS box has 2"),
        ("swapped map", {}, f"{style}\npair_coeff * * Au Cu\nrun 0", "type 1 has mass 63.546 but .* maps it to Au"),
        ("wrong dtype", {}, f"pair_style equimol {folder}/model32.pt2 dtype float64", "for float32, not float64"),
        ("wrong device", {}, f"{style} device cuda", "compiled for cpu, not cuda"),
        ("python target", {}, f"pair_style equimol {folder}/python.pt2", "python.pt2 is not an AOTInductor package"),
        ("not a package", {}, f"pair_style equimol {folder}/model64.pt", "model64.pt is not an AOTInductor package"),
        ("newton off", {"newton": "off"}, f"{style}\n{coeff}\nrun 0", "needs 'newton on'"),
        ("units", {"units_style": "real"}, style, "needs 'units metal'.*'units real'"),
    ]  # fmt: skip


def test_bad_input_is_one_lammps_error(plugin, compiled):
    atoms = cu_au_box(temperature_k=0.0)
    for name, options, commands, message in bad_input_cases(compiled["folder"]):
        lmp = open_box(atoms, **options)
        lmp.command(f"plugin load {plugin}")
        with pytest.raises(Exception, match=message) as error:
            lmp.commands_string(commands)
        # LAMMPS's format: one ERROR line, then the input line that caused it
        assert str(error.value).startswith("ERROR: ") and str(error.value).count("ERROR") == 1, name
        lmp.close()
    # the mass check has an escape for isotopes, as `equimol lammps --no-mass-check`
    lmp = open_box(atoms)
    lmp.commands_string(plugin_commands(compiled["folder"] / "model64.pt2", ["Au", "Cu"], False, plugin) + "\nrun 0")
    lmp.close()


def staged_evaluation(model, atoms, ranks: int):
    """Per-atom energies and forces of ``atoms`` from the ``lammps`` target's programs (torch.export, in Python),
    run as ``ranks`` ranks would: slabs along the first cell vector, each rank's graph its owned atoms and the
    atoms that send to them, each layer for owned atoms only; the features of ghost nodes come from their owners
    between layers and their derivatives are summed into their owners going back (what the plugin does with
    LAMMPS's forward and reverse communication)."""
    from equimol.graph import atoms_to_graph, edge_vectors
    from equimol.pt2_lammps import export_lammps_programs

    programs = {name: program.module() for name, (program, _) in export_lammps_programs(model).items()}
    graph = atoms_to_graph(atoms, model.radial_cutoff, torch.float64)
    vectors = edge_vectors(graph.pos, graph.edge_index, graph.cell_offsets, graph.cell)
    sender, receiver = graph.edge_index
    n, layers = len(atoms), len(model.interactions)
    slab = torch.as_tensor((atoms.get_scaled_positions()[:, 0] * ranks).astype(int))
    parts = []
    for rank in range(ranks):
        owned = (slab == rank).nonzero()[:, 0]
        edges = (slab[receiver] == rank).nonzero()[:, 0]
        ghosts = torch.tensor(sorted(set(sender[edges].tolist()) - set(owned.tolist())), dtype=torch.long)
        nodes = torch.cat([owned, ghosts])
        local = torch.full((n,), -1, dtype=torch.long).index_copy_(0, nodes, torch.arange(len(nodes)))
        edge_index = torch.stack([local[sender[edges]], local[receiver[edges]]])
        inputs = (graph.atomic_numbers[nodes], vectors[edges], edge_index, torch.zeros(len(owned), dtype=torch.int8))
        parts.append({"owned": owned, "nodes": nodes, "edges": edges, "graph": inputs, "stages": []})
    energy, gradient = torch.zeros(n, dtype=torch.float64), torch.zeros_like(vectors)
    features = None
    for t in range(layers - 1):
        exchanged = None
        for part in parts:
            inputs = part["graph"] if t == 0 else (features[part["nodes"]], *part["graph"])
            updated, share, *saved = programs[f"layer{t}_forward"](*inputs)
            exchanged = updated.new_zeros(n, updated.shape[1]) if exchanged is None else exchanged
            exchanged[part["owned"]] = updated
            energy[part["owned"]] += share
            part["stages"].append((inputs, saved))
        features = exchanged
    returned = None
    for part in parts:
        outputs = programs["model"](*(part["graph"] if layers == 1 else (features[part["nodes"]], *part["graph"])))
        energy[part["owned"]] += outputs[0]
        gradient[part["edges"]] += outputs[1]
        if layers > 1:
            returned = outputs[2].new_zeros(n, outputs[2].shape[1]) if returned is None else returned
            returned.index_add_(0, part["nodes"], outputs[2])
    for t in reversed(range(layers - 1)):
        summed = None
        for part in parts:
            inputs, saved = part["stages"][t]
            outputs = programs[f"layer{t}_backward"](*inputs, *saved, returned[part["owned"]])
            gradient[part["edges"]] += outputs[0]
            if t > 0:
                summed = outputs[1].new_zeros(n, outputs[1].shape[1]) if summed is None else summed
                summed.index_add_(0, part["nodes"], outputs[1])
        returned = summed
    forces = torch.zeros(n, 3, dtype=torch.float64).index_add_(0, sender, gradient).index_add_(0, receiver, -gradient)
    return energy, forces


MACE_LIKE = {"interaction": "product_basis", "many_body": "gaunt", "correlation": 2, "self_connection": "species"}


def test_layer_programs_on_emulated_ranks_match_the_model():
    """Each rank computes each layer for its owned atoms only: with the features exchanged between layers and
    the derivatives summed back, per-atom energies and forces on 1, 2 and 3 ranks equal the model's to 1e-12
    (relative to the largest force; measured 1e-15), here for 3 MACE-like layers with ZBL (the 2-layer gated
    model runs through LAMMPS below). A per-layer read-out gives every layer an energy share."""
    # ZBL switched on out to 3.5 Å, so that the box's 2.6 Å neighbours feel it
    options = {"num_layers": 3, "pair_repulsion": "zbl", "zbl_inner": 2.0, "zbl_outer": 3.5, **MACE_LIKE}
    model = small_model([29, 79], readout="per_layer", energy_scale=5.0, **options).eval()
    atoms = cu_au_box(temperature_k=300.0)
    calculator = EquimolCalculator(model)
    expected_energies, expected_forces = calculator.get_potential_energies(atoms), calculator.get_forces(atoms)
    scale = np.abs(expected_forces).max()
    assert scale > 1e-3
    for ranks in (1, 2, 3):
        energies, forces = staged_evaluation(model, atoms, ranks)
        assert np.abs(energies.numpy() - expected_energies).max() < 1e-12 * np.abs(expected_energies).max(), ranks
        assert np.abs(forces.numpy() - expected_forces).max() < 1e-12 * scale, ranks


def test_compile_target_errors_and_the_python_side_refuses_a_plugin_file(compiled, tmp_path, capsys):
    with pytest.raises(CompiledModelError, match="compiled with --target lammps for LAMMPS's pair_style equimol"):
        load_compiled(compiled["folder"] / "model64.pt2")
    model_file = compiled["folder"] / "model64.pt"
    assert main(["export", str(model_file), str(tmp_path / "x.pt2"), "--format", "export", "--target", "lammps"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pair_style equimol runs AOTInductor packages only" in error
    assert main(["export", str(model_file), str(tmp_path / "x.pt"), "--target", "lammps"]) == 2
    assert "add --format aotinductor" in capsys.readouterr().err
    spe = small_model(SPECIES, spe={"enabled": True, "mode": "chebyshev"})
    with pytest.raises(CompiledModelError, match="model.spe is enabled"):
        compile_model(spe, tmp_path / "spe.pt2", target="lammps")
    assert not (tmp_path / "x.pt2").exists() and not (tmp_path / "spe.pt2").exists()


def test_build_plugin_command_prints_the_cached_library(plugin, capsys, monkeypatch):
    monkeypatch.setenv("EQUIMOL_CACHE_DIR", str(PLUGIN_CACHE))
    assert main(["lammps", "build-plugin"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(plugin) and f"plugin load {plugin}" in captured.err
    assert plugin == plugin_path(PLUGIN_CACHE) and plugin.is_file()


def test_a_machine_without_a_compiler_gets_one_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EQUIMOL_CACHE_DIR", str(tmp_path))  # nothing cached here: a build is needed
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    assert main(["lammps", "build-plugin"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("equimol lammps: error: building pair_style equimol needs cmake")
    assert "not found: cmake, a C++ compiler" in error and "`equimol lammps` (fix external)" in error
    assert main(["lammps", "model.pt"]) == 2  # the fix external route still parses its own arguments
    assert "expected MODEL INPUT --elements" in capsys.readouterr().err
