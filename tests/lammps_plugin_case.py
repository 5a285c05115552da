"""NVE runs through ``pair_style equimol``, shared by tests/test_lammps_plugin.py and its ``mpirun`` children.

``python tests/lammps_plugin_case.py PLUGIN.so MODEL.pt2 SHARED_DATA OUT.npz STEPS`` (under ``mpirun -np K``) runs
:func:`run_plugin` on the Cu/Au box and the periodic 3BPA box on every rank and writes rank 0's
results, keyed ``cu_au_*`` and ``molecule_*``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.md.velocitydistribution import thermalize_momenta
from lammps_case import ELEMENTS, cu_au_box

from equimol.lammps import create_box_from_atoms, load_lammps, plugin_commands

MOLECULE_ELEMENTS = ["H", "C", "N", "O"]
SPECIES = ["H", "C", "N", "O", "Cu", "Au"]
TIMESTEP_FS = {"cu_au": 1.0, "molecule": 0.5}
# one array per atom, gathered in atom-ID order, at the first force evaluation: per-atom energy and
# per-atom virial (compute stress/atom, bar·Å³), and the virial part of the pressure tensor (bar)
DIAGNOSTICS = (
    "compute equimol_pe all pe/atom\n"
    "compute equimol_stress all stress/atom NULL virial\n"
    "compute equimol_virial all pressure NULL virial\n"
    "thermo_style custom step pe vol c_equimol_virial[*]"
)


def molecule_box(shared_data: Path) -> Atoms:
    """The first 3BPA frame (27 atoms) in a periodic 12 Å cube, seeded 300 K velocities: it meets its images."""
    atoms = ase.io.read(Path(shared_data) / "3bpa" / "train_300K.xyz", index=0)
    atoms.calc = None
    atoms.set_cell(np.eye(3) * 12.0)
    atoms.center()
    atoms.pbc = True
    thermalize_momenta(atoms, 300.0, rng=np.random.default_rng(1))
    return atoms


def systems(shared_data: Path) -> dict[str, tuple[Atoms, list[str]]]:
    """The rattled, triclinic 108-atom Cu/Au box and the periodic 3BPA box, with their type -> element maps."""
    return {
        "cu_au": (cu_au_box(tilt=0.1, repeat=3), ELEMENTS),
        "molecule": (molecule_box(shared_data), MOLECULE_ELEMENTS),
    }


def run_plugin(
    plugin: Path, model: Path, atoms: Atoms, elements: list[str], steps: int, timestep_fs: float, comm=None
) -> dict:
    """``steps`` NVE steps of ``atoms`` under ``pair_style equimol``; first-step diagnostics, final positions."""
    lmp = load_lammps()(cmdargs=["-log", "none", "-screen", "none", "-nocite"], comm=comm)
    lmp.commands_string("units metal\natom_style atomic\natom_modify map yes\nnewton on")
    create_box_from_atoms(lmp, atoms, elements)
    lmp.commands_string(plugin_commands(model, elements, plugin=plugin))
    lmp.commands_string(f"{DIAGNOSTICS}\ntimestep {timestep_fs / 1000.0!r}\nneighbor 1.0 bin\nfix nve all nve\nrun 0")
    count = len(atoms)
    result = {
        "energy": np.array(lmp.get_thermo("pe")),
        "volume": np.array(lmp.get_thermo("vol")),
        "energies": np.asarray(lmp.gather("c_equimol_pe", 1, 1)).reshape(count),
        "stresses": np.asarray(lmp.gather("c_equimol_stress", 1, 6)).reshape(count, 6),
        "pressure": np.array([lmp.numpy.extract_compute("equimol_virial", 0, 1)[k] for k in range(6)]),
        "forces": np.asarray(lmp.gather_atoms("f", 1, 3)).reshape(count, 3),
    }
    lmp.command(f"run {steps}")
    result["positions"] = np.asarray(lmp.gather_atoms("x", 1, 3)).reshape(count, 3)
    result["final_energy"] = np.array(lmp.get_thermo("pe"))
    lmp.close()
    return result


def run_all(plugin: Path, model: Path, shared_data: Path, steps: int, comm=None) -> dict[str, np.ndarray]:
    """:func:`run_plugin` on every system of :func:`systems`, results keyed ``<system>_<quantity>``."""
    out = {}
    for name, (atoms, elements) in systems(shared_data).items():
        for key, value in run_plugin(plugin, model, atoms, elements, steps, TIMESTEP_FS[name], comm).items():
            out[f"{name}_{key}"] = value
    return out


if __name__ == "__main__":
    import torch
    from mpi4py import MPI

    torch.set_num_threads(1)
    plugin, model, shared_data, output, steps = sys.argv[1:6]
    outcome = run_all(Path(plugin), Path(model), Path(shared_data), int(steps), comm=MPI.COMM_WORLD)
    if MPI.COMM_WORLD.Get_rank() == 0:
        np.savez(output, size=MPI.COMM_WORLD.Get_size(), **outcome)
