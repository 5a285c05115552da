"""Relaxation and NVE energy conservation of a trained 3BPA model through the ASE calculator.

    python benchmarks/md_3bpa.py [MODEL] [--data DIR] [--out benchmarks/md_3bpa.json --overwrite]

* BFGS from a test_300K frame with every coordinate perturbed by N(0, 0.05 Å) to fmax < 0.01 eV/Å;
* 1 ps of NVE (velocity Verlet, 0.5 fs, 2000 steps) from test_300K frame 0 with Maxwell-Boltzmann
  velocities at 300 K: the total energy's drift (least-squares slope, eV/ps, and per atom) and its
  largest deviation from the start.

MODEL defaults to runs/3bpa_quick/model.pt (``equimol train configs/3bpa_quick.yaml``). The record
names the model, its dtype and the machine. One intra-op thread: a 27-atom call is ~10 ms, where a
second thread only adds contention.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ase.io
import numpy as np
import torch
from _common import ROOT, check_outputs
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from equimol.calculator import EquimolCalculator
from equimol.utils.machine import describe_machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(ROOT / "runs" / "3bpa_quick" / "model.pt"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder holding 3bpa/")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "md_3bpa.json"))
    parser.add_argument("--steps", type=int, default=2000, help="NVE steps of 0.5 fs (default 2000 = 1 ps)")
    parser.add_argument("--note", default="", help="how the model was trained, for the record")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args()
    check_outputs([args.out], args.overwrite)
    torch.set_num_threads(1)
    calculator = EquimolCalculator(model=args.model)
    frame = ase.io.read(Path(args.data) / "3bpa" / "test_300K.xyz", index=0)
    frame.calc = None

    atoms = frame.copy()
    atoms.positions += np.random.default_rng(0).normal(scale=0.05, size=atoms.positions.shape)
    atoms.calc = calculator
    start_fmax = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
    start = time.perf_counter()
    optimizer = BFGS(atoms, logfile=None)
    converged = bool(optimizer.run(fmax=0.01, steps=2000))
    relax = {
        "converged": converged,
        "steps": int(optimizer.nsteps),
        "fmax_start_eV_per_A": start_fmax,
        "fmax_final_eV_per_A": float(np.linalg.norm(atoms.get_forces(), axis=1).max()),
        "seconds": time.perf_counter() - start,
    }
    print("BFGS:", relax)

    atoms = frame.copy()
    atoms.calc = calculator
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    times, totals, temperatures = [], [], []

    def record() -> None:
        times.append(dynamics.get_time() / (1000 * units.fs))  # ps
        totals.append(atoms.get_total_energy())
        temperatures.append(atoms.get_temperature())

    dynamics.attach(record, interval=1)
    start = time.perf_counter()
    dynamics.run(args.steps)
    seconds = time.perf_counter() - start
    times, totals = np.asarray(times), np.asarray(totals)
    slope = float(np.polyfit(times, totals, 1)[0])
    nve = {
        "steps": args.steps,
        "timestep_fs": 0.5,
        "duration_ps": float(times[-1]),
        "initial_temperature_K": 300,
        "mean_temperature_K": float(np.mean(temperatures)),
        "drift_eV_per_ps": slope,
        "drift_meV_per_atom_per_ps": 1e3 * slope / len(atoms),
        "max_deviation_eV": float(np.abs(totals - totals[0]).max()),
        "std_eV": float(totals.std()),
        "seconds": seconds,
    }
    print("NVE:", nve)
    record_file = {
        "model": str(args.model),
        "model_dtype": str(calculator.dtype).removeprefix("torch."),
        "model_note": args.note,
        "machine": describe_machine("cpu"),
        "relaxation": relax,
        "nve": nve,
    }
    Path(args.out).write_text(json.dumps(record_file, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
