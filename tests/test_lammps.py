"""LAMMPS through ``fix external pf/callback`` (:mod:`equimol.lammps`): trajectories, pressure, MPI, errors.

The model is a tiny *random* float64 potential (tests/lammps_case.py): these tests check the
coupling, not a potential. Tolerances:

* positions after 20 NVE steps vs ASE's ``VelocityVerlet`` with the calculator: 1e-8 Å. Both
  integrate the same float64 forces; they differ only in LAMMPS's rounded unit constant
  ``ftm2v = 1/1.0364269e-4`` (ASE uses CODATA, 1e-8 relative apart) and summation order, which
  leave ~1e-11 Å after 20 steps. A wrong unit, mass or sign moves atoms by 1e-4 Å or more.
* pressure tensor vs the calculator's stress: 1e-7 relative (LAMMPS's ``nktv2p = 1.6021765e6``
  bar per eV/Å³ is rounded to 8 digits), at zero velocity so that the kinetic term vanishes.
* 2 MPI ranks vs 1 rank: 1e-10 Å (same evaluation on rank 0, same atom order).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import units
from ase.geometry import find_mic
from ase.md.verlet import VelocityVerlet
from lammps_case import ELEMENTS, TIMESTEP_FS, cu_au_box, lammps_positions, open_lammps, run_nve, tiny_model

from equimol.calculator import EquimolCalculator
from equimol.export import export_model
from equimol.lammps import EquimolFix, LammpsCouplingError, load_lammps
from equimol.lammps_input import run_input

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_nve_reproduces_ase_velocity_verlet():
    atoms = cu_au_box()
    reference = atoms.copy()
    reference.calc = EquimolCalculator(tiny_model())
    VelocityVerlet(reference, timestep=TIMESTEP_FS * units.fs).run(20)
    outcome = run_nve(20)
    displacement, _ = find_mic(outcome["positions"] - reference.positions, reference.cell, reference.pbc)
    assert np.abs(reference.positions - atoms.positions).max() > 1e-3  # the atoms did move
    assert np.abs(displacement).max() < 1e-8
    np.testing.assert_allclose(outcome["forces"], reference.get_forces(), atol=1e-8)
    assert abs(outcome["potential_energy"] - reference.get_potential_energy()) < 1e-8


def test_pressure_tensor_matches_calculator_stress():
    atoms = cu_au_box(tilt=0.1, temperature_k=0.0)  # triclinic; no velocity, so no kinetic term
    lmp = open_lammps(atoms, integrate=False)
    EquimolFix(lmp, tiny_model(), ELEMENTS)
    lmp.command("run 0")
    atoms.calc = EquimolCalculator(tiny_model())
    xx, yy, zz, yz, xz, xy = -atoms.get_stress() / units.bar  # pressure = -stress, in bar
    lammps = {name: lmp.get_thermo(name) for name in ("press", "pxx", "pyy", "pzz", "pxy", "pxz", "pyz")}
    expected = {"press": (xx + yy + zz) / 3, "pxx": xx, "pyy": yy, "pzz": zz, "pxy": xy, "pxz": xz, "pyz": yz}
    scale = max(abs(value) for value in expected.values())
    assert scale > 100.0  # bar: a real pressure, not zeros on both sides
    for name, value in expected.items():
        assert abs(lammps[name] - value) < 1e-7 * scale, (name, lammps[name], value)
    assert abs(lmp.get_thermo("pe") - atoms.get_potential_energy()) < 1e-9
    lmp.close()


def test_per_atom_energies_and_virials_reach_lammps_computes():
    """``per_atom=True``: compute pe/atom and stress/atom equal the calculator's per-atom values (1e-10 relative)."""
    atoms = cu_au_box(tilt=0.1, temperature_k=0.0)
    lmp = open_lammps(atoms, integrate=False)
    EquimolFix(lmp, tiny_model(), ELEMENTS, per_atom=True)
    lmp.commands_string("compute energies all pe/atom\ncompute virials all stress/atom NULL virial\nrun 0")
    count = len(atoms)
    energies = np.asarray(lmp.gather("c_energies", 1, 1)).reshape(count)
    # stress/atom is -W_i in bar·Å³, in LAMMPS's order xx yy zz xy xz yz; the calculator's stresses are -W_i / V
    virials = -np.asarray(lmp.gather("c_virials", 1, 6)).reshape(count, 6) / 1.6021765e6
    lmp.close()
    atoms.calc = EquimolCalculator(tiny_model())
    expected = -atoms.get_volume() * atoms.get_stresses()[:, [0, 1, 2, 5, 4, 3]]
    assert np.abs(energies - atoms.get_potential_energies()).max() < 1e-10
    assert np.abs(expected).max() > 1e-3
    assert np.abs(virials - expected).max() < 1e-10 * np.abs(expected).max()


def test_npt_moves_the_box_towards_the_target_pressure():
    atoms = cu_au_box(temperature_k=300.0)
    lmp = open_lammps(atoms, integrate=False)
    EquimolFix(lmp, tiny_model(), ELEMENTS)
    lmp.command("fix barostat all npt temp 300 300 0.1 iso 0 0 1.0")
    lmp.command("run 0")
    start_volume, start_pressure = lmp.get_thermo("vol"), lmp.get_thermo("press")
    lmp.command("run 30")
    # The model's pressure is thousands of bar; the barostat must act on it (expand if positive).
    assert abs(start_pressure) > 1000.0
    assert np.sign(lmp.get_thermo("vol") - start_volume) == np.sign(start_pressure)
    lmp.close()


def test_two_mpi_ranks_reproduce_one_rank(tmp_path):
    launcher = Path(sys.executable).parent / "mpirun"
    output = tmp_path / "two_ranks.npz"
    command = [str(launcher), "-np", "2", sys.executable, str(ROOT / "tests" / "lammps_case.py"), str(output), "10"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr[-2000:]
    two = np.load(output)
    assert int(two["size"]) == 2
    one = run_nve(10)
    assert np.abs(two["positions"] - one["positions"]).max() < 1e-10
    assert np.abs(two["forces"] - one["forces"]).max() < 1e-10
    assert abs(float(two["pressure"]) - float(one["pressure"])) < 1e-6
    assert abs(float(two["potential_energy"]) - float(one["potential_energy"])) < 1e-10
    assert np.abs(two["rank_energies"] - float(one["potential_energy"])).max() < 1e-10


def test_refuses_a_type_map_that_does_not_fit():
    atoms = cu_au_box(temperature_k=0.0)
    lmp = open_lammps(atoms)
    with pytest.raises(LammpsCouplingError, match="names 1 type.*2 atom types"):
        EquimolFix(lmp, tiny_model(), ["Cu"])
    with pytest.raises(LammpsCouplingError, match=r"type 1 has mass 63.5.* maps it to Au"):
        EquimolFix(lmp, tiny_model(), ["Au", "Cu"])
    with pytest.raises(LammpsCouplingError, match=r"\['Ag'\] not among the model's species \['Cu', 'Au'\]"):
        EquimolFix(lmp, tiny_model(), ["Cu", "Ag"])
    with pytest.raises(LammpsCouplingError, match="'Xx' is not a chemical symbol"):
        EquimolFix(lmp, tiny_model(), ["Cu", "Xx"])
    lmp.close()
    real = load_lammps()(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    real.command("units real")
    with pytest.raises(LammpsCouplingError, match="needs 'units metal'"):
        EquimolFix(real, tiny_model(), ["Cu"])
    real.close()


class _Failing(torch.nn.Module):
    """A model whose evaluation raises: the error must stop LAMMPS, not be printed and skipped."""

    radial_cutoff = 4.0
    species = [29, 79]

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, graph, compute_forces=True, compute_stress=False):
        raise RuntimeError("model exploded")


def test_a_failing_evaluation_stops_the_run():
    lmp = open_lammps(cu_au_box())
    coupling = EquimolFix(lmp, _Failing(), ELEMENTS)
    with pytest.raises(Exception, match="halt"):
        lmp.command("run 5")
    assert lmp.get_thermo("step") < 5
    with pytest.raises(RuntimeError, match="model exploded"):
        coupling.raise_if_failed()
    lmp.close()


def test_input_script_example_runs(tmp_path):
    model_file = export_model(tiny_model(), tmp_path / "model.pt")
    script = tmp_path / "in.lmp"
    example = (ROOT / "examples" / "lammps" / "in.npt.lmp").read_text(encoding="utf-8")
    script.write_text(re.sub(r"^run\s+\d+", "run 2", example, flags=re.M), encoding="utf-8")
    (tmp_path / "cu_au.data").write_text((ROOT / "examples" / "lammps" / "cu_au.data").read_text(), encoding="utf-8")
    lmp = load_lammps()(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    coupling = run_input(lmp, script, model_file, ["Cu", "Au"])
    assert coupling.evaluations == 3  # setup + 2 steps
    assert lammps_positions(lmp, 32).shape == (32, 3)
    lmp.close()


def test_command_line_runs_the_example_and_reports_a_bad_map_in_one_line(tmp_path, capsys, monkeypatch):
    from equimol.cli import main

    model_file = export_model(tiny_model(), tmp_path / "model.pt")
    example = (ROOT / "examples" / "lammps" / "in.npt.lmp").read_text(encoding="utf-8")
    (tmp_path / "in.lmp").write_text(re.sub(r"^run\s+\d+", "run 1", example, flags=re.M), encoding="utf-8")
    (tmp_path / "cu_au.data").write_text((ROOT / "examples" / "lammps" / "cu_au.data").read_text(), encoding="utf-8")
    (tmp_path / "inputs").mkdir()
    (tmp_path / "in.lmp").rename(tmp_path / "inputs" / "in.lmp")
    (tmp_path / "cu_au.data").rename(tmp_path / "inputs" / "cu_au.data")
    monkeypatch.chdir(tmp_path)  # relative paths, the script in another folder: as in the README
    arguments = ["lammps", model_file.name, "inputs/in.lmp", "--quiet", "--elements"]
    assert main(arguments + ["Cu", "Au"]) == 0
    assert "2 force evaluations" in capsys.readouterr().out
    assert main(arguments + ["Au", "Cu"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("equimol lammps: error: LAMMPS type 1 has mass") and "\n" not in error
    assert "--no-mass-check" in error and "check_masses" not in error  # the command line's flag
    (tmp_path / "inputs" / "in.lmp").write_text(example.replace("read_data", "read_dat"), encoding="utf-8")
    assert main(arguments + ["Cu", "Au"]) == 2
    error = capsys.readouterr().err.strip()
    assert "LAMMPS ERROR: Unknown command" in error and "\n" not in error


@pytest.mark.slow
def test_a_model_rank_0_cannot_load_stops_every_rank(tmp_path):
    """Rank 0 alone loads the model: its error must reach the other ranks, which would otherwise wait forever."""
    example = (ROOT / "examples" / "lammps" / "in.npt.lmp").read_text(encoding="utf-8")
    (tmp_path / "in.lmp").write_text(re.sub(r"^run\s+\d+", "run 1", example, flags=re.M), encoding="utf-8")
    (tmp_path / "cu_au.data").write_text((ROOT / "examples" / "lammps" / "cu_au.data").read_text(), encoding="utf-8")
    launcher, console = Path(sys.executable).parent / "mpirun", Path(sys.executable).with_name("equimol")
    command = [
        str(launcher),
        "-np",
        "2",
        str(console),
        "lammps",
        str(tmp_path / "missing.pt"),
        str(tmp_path / "in.lmp"),
    ]
    completed = subprocess.run(
        [*command, "--elements", "Cu", "Au", "--quiet"], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 2
    assert completed.stderr.count("missing.pt' does not exist") == 2  # rank 0's own error and rank 1's copy
