"""Energy conservation of 1000 NVE steps in LAMMPS (fix external) with an equimol potential, beside ASE.

    python benchmarks/lammps_nve_drift.py [MODEL --elements Cu Au] [--out STEM] [--overwrite]

The same structure, velocities and model run in LAMMPS (``fix nve``, :mod:`equimol.lammps`) and in ASE's
``VelocityVerlet`` with the calculator, float64 and float32, one after the other in one process. Without
MODEL: the tiny random Cu/Au model of the tests (:func:`equimol.microbench.systems.small_model`, 8
channels, L = 1, 2 layers, cutoff 4 Å) on 108 atoms of rattled fcc Cu with every 4th atom Au, 300 K, 1
fs: it tests the coupling's energy conservation, not a trained potential. Recorded: total energy every 10
steps, its drift (least-squares slope, meV/atom/ps), largest deviation from the start, and wall time per
step (one intra-op thread; the machine's load is recorded too).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from _common import markdown_table, parse_stem, write_json, write_markdown
from ase import units
from ase.md.verlet import VelocityVerlet

from equimol.calculator import EquimolCalculator
from equimol.export import load_model
from equimol.lammps import EquimolFix
from equimol.microbench.systems import cu_au_box, open_lammps, small_model
from equimol.utils.machine import describe_machine

STEPS, EVERY, TIMESTEP_FS = 1000, 10, 1.0


def sampled_run(advance, total_energy, count: int) -> dict:
    """``STEPS`` steps of ``count`` atoms, ``advance(EVERY)`` at a time, with ``total_energy()`` (eV) before and after
    each: the drift (least-squares slope), the largest deviation from the start and the wall time per step."""
    energies, start = [total_energy()], time.perf_counter()
    for _ in range(STEPS // EVERY):
        advance(EVERY)
        energies.append(total_energy())
    seconds = time.perf_counter() - start
    energies = np.asarray(energies)
    slope = np.polyfit(np.arange(len(energies)) * EVERY * TIMESTEP_FS / 1000.0, energies, 1)[0]
    return {
        "drift_meV_per_atom_per_ps": float(slope / count * 1000.0),
        "max_deviation_meV_per_atom": float(np.abs(energies - energies[0]).max() / count * 1000.0),
        "total_energy_start_eV": float(energies[0]),
        "ms_per_step": float(seconds / STEPS * 1000.0),
        "total_energy_eV_every_10_steps": energies.round(8).tolist(),
    }


def run_lammps(model, atoms, elements) -> dict:
    lmp = open_lammps(atoms, elements=elements)
    EquimolFix(lmp, model, elements)
    lmp.command("run 0")
    result = sampled_run(lambda steps: lmp.command(f"run {steps} pre no post no"), lambda: lmp.get_thermo("etotal"),
                         len(atoms))  # fmt: skip
    lmp.close()
    return result


def run_ase(model, atoms) -> dict:
    atoms = atoms.copy()
    atoms.calc = EquimolCalculator(model)
    return sampled_run(VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs).run, atoms.get_total_energy, len(atoms))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="model file (default: the tests' tiny random Cu/Au model)")
    parser.add_argument("--elements", nargs="+", default=["Cu", "Au"], help="element of each LAMMPS type")
    args = parse_stem(parser, "lammps_nve_drift")
    torch.set_num_threads(1)
    atoms = cu_au_box(repeat=3)
    record = {
        "model": args.model or "small_model([Cu, Au], energy_scale=5): random weights, float64 and float32 casts",
        "structure": f"{len(atoms)} atoms, rattled fcc Cu (a = 3.7 Å) with every 4th atom Au, periodic, 300 K",
        "steps": STEPS, "timestep_fs": TIMESTEP_FS, "machine": describe_machine("cpu"),
        "load_average_1_5_15_min_at_start": list(os.getloadavg()), "runs": {},
    }  # fmt: skip
    for dtype in ("float64", "float32"):
        model = (load_model(args.model, dtype=dtype) if args.model
                 else small_model([29, 79], energy_scale=5.0).eval().to(getattr(torch, dtype)))  # fmt: skip
        record["runs"][f"lammps_{dtype}"] = run_lammps(model, atoms, args.elements)
        record["runs"][f"ase_{dtype}"] = run_ase(model, atoms)
        print(dtype, {k: v["drift_meV_per_atom_per_ps"] for k, v in record["runs"].items()}, flush=True)
    record["load_average_1_5_15_min_at_end"] = list(os.getloadavg())
    write_json(args.out, record)
    write_drift_markdown(record, args.out)


def write_drift_markdown(record: dict, stem: str) -> None:
    """The table of ``record`` as ``stem.md`` (drift only: the runs were sequential, so their times are no A/B)."""
    machine = record["machine"]
    lines = [
        "# LAMMPS NVE energy drift (fix external) beside ASE VelocityVerlet",
        "",
        f"{record['structure']}; {record['steps']} steps of {record['timestep_fs']} fs; model: {record['model']}.",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores, torch {machine['torch']}, 1 thread; load "
        f"average {record['load_average_1_5_15_min_at_start'][0]:.2f} at start (a shared machine).",
        "Command: `python benchmarks/lammps_nve_drift.py`. Drift: least-squares slope of the total",
        "energy sampled every 10 steps. Wall times per step are in the JSON; the four runs ran one after the",
        "other on a loaded machine, so they are not a speed comparison.",
        "",
    ]
    header = ["engine, dtype", "drift (meV/atom/ps)", "max deviation from start (meV/atom)"]
    rows = [[name.replace("_", ", "), f"{run['drift_meV_per_atom_per_ps']:.2e}",
             f"{run['max_deviation_meV_per_atom']:.2e}"] for name, run in record["runs"].items()]  # fmt: skip
    write_markdown(stem, lines + markdown_table(header, rows))


if __name__ == "__main__":
    main()
