"""MD throughput of TorchSim's batched NVE with an equimol model against looping the ASE calculator.

    python benchmarks/torchsim_throughput.py [--structures 8,32] [--steps 20] [--out STEM] [--overwrite]

For each batch size B: B periodic Cu/Pd/Ag/Au boxes of 4 to 32 atoms
(:func:`equimol.microbench.systems.periodic_structures`, repeated), the tiny random float64 model of the
tests (8 channels, L = 1, 2 layers, cutoff 4 Å). A: TorchSim ``nve`` on all B structures at once (one
batched model call per step, neighbor lists rebuilt every step); B: ASE ``VelocityVerlet`` with
``EquimolCalculator`` run on each structure in turn (neighbor list reused within its 0.5 Å skin). A and B
alternate in rounds in one process (one intra-op thread); the median round gives atoms·steps/s and the
ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from functools import partial

import numpy as np
import torch
import torch_sim as ts
from _common import interleaved, markdown_table, parse_stem, write_json, write_markdown
from ase import units
from ase.md.verlet import VelocityVerlet

from equimol.calculator import EquimolCalculator
from equimol.microbench.systems import SPECIES, periodic_structures, small_model
from equimol.torchsim import EquimolModel
from equimol.utils.machine import describe_machine


def torchsim_round(model: EquimolModel, structures, steps: int) -> float:
    state = ts.io.atoms_to_state(structures, model.device, model.dtype)
    state.momenta = torch.as_tensor(np.concatenate([atoms.get_momenta() for atoms in structures]))
    dt = torch.tensor(1.0 * units.fs, dtype=torch.float64)
    initialize, update = ts.nve(model, dt=dt, kT=torch.tensor(0.0, dtype=torch.float64))
    dynamics = initialize(state)
    start = time.perf_counter()
    for _ in range(steps):
        dynamics = update(dynamics)
    return time.perf_counter() - start


def ase_round(model, structures, steps: int) -> float:
    runs = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = EquimolCalculator(model)
        atoms.get_forces()  # the first evaluation, as TorchSim's initialize does, outside the timing
        runs.append(VelocityVerlet(atoms, timestep=1.0 * units.fs))
    start = time.perf_counter()
    for dynamics in runs:
        dynamics.run(steps)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", default="8,32", help="batch sizes, comma-separated")
    parser.add_argument("--steps", type=int, default=20, help="MD steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median reported)")
    args = parse_stem(parser, "torchsim_throughput")
    torch.set_num_threads(1)
    model = small_model(SPECIES, energy_scale=5.0).eval()
    wrapped = EquimolModel(model)
    record = {
        "model": "equimol.microbench.systems.small_model(Cu, Pd, Ag, Au), random weights, float64",
        "steps_per_round": args.steps, "machine": describe_machine("cpu"),
        "load_average_1_5_15_min_at_start": list(os.getloadavg()), "results": [],
    }  # fmt: skip
    base = periodic_structures()
    for count in (int(value) for value in args.structures.split(",")):
        structures = [base[i % len(base)] for i in range(count)]
        atoms = sum(len(a) for a in structures)
        rounds = {"torchsim": partial(torchsim_round, wrapped), "ase_loop": partial(ase_round, model)}
        times = interleaved({name: partial(run, structures, args.steps) for name, run in rounds.items()}, args.rounds)
        rates = {name: atoms * args.steps / statistics.median(values) for name, values in times.items()}
        entry = {"structures": count, "atoms": atoms, "atoms_steps_per_s": rates,
                 "torchsim_over_ase": rates["torchsim"] / rates["ase_loop"], "seconds": times}  # fmt: skip
        record["results"].append(entry)
        print(json.dumps({k: entry[k] for k in ("structures", "atoms", "atoms_steps_per_s", "torchsim_over_ase")}))
    record["load_average_1_5_15_min_at_end"] = list(os.getloadavg())
    write_json(args.out, record)
    machine = record["machine"]
    lines = [
        "# TorchSim batched NVE against looping the ASE calculator",
        "",
        f"Model: {record['model']}. {args.steps} NVE steps of 1 fs per round, {args.rounds} alternating rounds, "
        "median.",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores, torch {machine['torch']}, 1 thread; load average "
        f"{record['load_average_1_5_15_min_at_start'][0]:.2f} at start, "
        f"{record['load_average_1_5_15_min_at_end'][0]:.2f} at end (a shared machine).",
        "Command: `python benchmarks/torchsim_throughput.py`.",
        "",
    ]
    header = ["structures", "atoms", "TorchSim (atoms·steps/s)", "ASE loop (atoms·steps/s)", "TorchSim / ASE"]
    rows = [[e["structures"], e["atoms"], *(f"{e['atoms_steps_per_s'][k]:.0f}" for k in ("torchsim", "ase_loop")),
             f"{e['torchsim_over_ase']:.2f}"] for e in record["results"]]  # fmt: skip
    write_markdown(args.out, lines + markdown_table(header, rows))


if __name__ == "__main__":
    main()
