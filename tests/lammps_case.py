"""One LAMMPS NVE run of a tiny random equimol model, shared by tests/test_lammps.py and its ``mpirun`` child.

``python tests/lammps_case.py OUT.npz`` (under ``mpirun -np K``) runs :func:`run_nve` on every rank
and writes rank 0's result; the test compares it with the same run on one rank.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from equimol.lammps import EquimolFix
from equimol.microbench.systems import ELEMENTS, TIMESTEP_FS, cu_au_box, open_lammps, small_model  # noqa: F401


def tiny_model(seed: int = 0, dtype: str = "float64"):
    """A random (untrained) 2-layer model for Cu and Au; ``energy_scale`` 5 gives forces ~0.1-1 eV/Å."""
    return small_model([29, 79], seed=seed, dtype=dtype, energy_scale=5.0).eval()


def lammps_positions(lmp, count: int) -> np.ndarray:
    """``[count, 3]`` positions (Å) on this rank's copy, ordered by atom ID (``gather_atoms``: all ranks)."""
    return np.asarray(lmp.gather_atoms("x", 1, 3)).reshape(count, 3)


def run_nve(steps: int, comm=None) -> dict[str, np.ndarray]:
    """``steps`` NVE steps of :func:`cu_au_box` in LAMMPS with :func:`tiny_model`; positions and energies."""
    torch.set_num_threads(1)
    atoms = cu_au_box()
    lmp = open_lammps(atoms, comm=comm)
    coupling = EquimolFix(lmp, tiny_model(), ELEMENTS, comm=comm)
    lmp.command(f"run {steps}")
    coupling.raise_if_failed()
    result = {
        "positions": lammps_positions(lmp, len(atoms)),
        "forces": np.asarray(lmp.gather_atoms("f", 1, 3)).reshape(len(atoms), 3),
        "potential_energy": np.array(lmp.get_thermo("pe")),
        "pressure": np.array(lmp.get_thermo("press")),
    }
    if comm is not None:  # LAMMPS wants the global energy on every rank (fix external adds it after the sum)
        result["rank_energies"] = np.array(comm.allgather(float(lmp.get_thermo("pe"))))
    lmp.close()
    return result


if __name__ == "__main__":
    from mpi4py import MPI

    outcome = run_nve(int(sys.argv[2]), comm=MPI.COMM_WORLD)
    if MPI.COMM_WORLD.Get_rank() == 0:
        np.savez(sys.argv[1], size=MPI.COMM_WORLD.Get_size(), **outcome)
