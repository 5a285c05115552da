"""LAMMPS throughput with an equimol potential: pair_style equimol (plugin) vs fix external vs the ASE calculator.

    python benchmarks/lammps_scaling.py [--sizes 500 4000] [--ranks 1 2] [--model main|tiny]
                                        [--atom-steps 60000] [--out benchmarks/lammps_scaling] [--overwrite]
                                        [--models DIR [--compile-only]]

Boxes of rattled fcc Cu (a = 3.7 Å) with every 4th atom Au, 4 k^3 atoms (k = 5: 500, k = 10: 4000),
300 K, 1 fs NVE. One random float32 model (``--model main``: the main job's architecture,
configs/3bpa_quick.yaml, with species Cu and Au; ``tiny``: the tests' 8-channel model, for a dry
run), written three ways: an eager model file, a compiled ``.pt2`` for Python (AOTInductor) and a
``--target lammps`` package for the plugin, all compiled at one thread. Each LAMMPS run is a fresh
``mpirun -np K`` of this script (``worker``), one torch thread per rank (``OMP_NUM_THREADS=1``):

* ``plugin``: ``pair_style equimol`` (each rank computes each layer for its own atoms, exchanging node
  features with the other ranks between layers);
* ``fix external``: ``equimol lammps``'s coupling with the eager model, and with the compiled ``.pt2``
  (rank 0 evaluates every atom, other ranks wait);
* ``ASE``: ``VelocityVerlet`` with the calculator, one process.

Throughput = atoms x timed steps / wall seconds of the timed steps, after a warm-up of 2 steps
(set-up, first evaluation, package loading). Steps per run: ``--atom-steps / atoms`` (at least 3).
The load average before and after is recorded; a scaling measurement needs idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import ROOT, check_outputs, markdown_table, quick_3bpa_model, write_json, write_markdown

from equimol.microbench.systems import cu_au_box

ELEMENTS = ["Cu", "Au"]
MAIN = quick_3bpa_model(species=ELEMENTS, avg_num_neighbors=40.0)  # the main job's model, "auto" values fixed
TINY = {"channels": 8, "lmax": 1, "num_layers": 2, "num_radial_basis": 6, "radial_cutoff": 4.0,
        "radial_mlp_hidden": [16], "readout_hidden": 8, "avg_num_neighbors": 10.0, "energy_scale": 5.0}  # fmt: skip


def box(atoms_wanted: int):
    """Rattled fcc Cu with every 4th atom Au, ``4 k^3`` atoms nearest ``atoms_wanted``, 300 K velocities."""
    return cu_au_box(repeat=max(1, round((atoms_wanted / 4) ** (1 / 3))))


def write_models(folder: Path, which: str) -> dict[str, Path]:
    """The eager model file, the Python ``.pt2`` and the plugin's ``.pt2`` of one random float32 model.

    Files already in ``folder`` (``--models``, from an earlier run with the same ``--model``) are kept:
    the packages can be compiled while the cores are busy and timed later.
    """
    from equimol.export import export_model
    from equimol.models import build_model
    from equimol.pt2_model import compile_model

    config = {**(MAIN if which == "main" else TINY), "species": ELEMENTS, "seed": 0, "dtype": "float32"}
    model = build_model(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"eager": folder / "model.pt", "compiled": folder / "model.pt2", "plugin": folder / "plugin.pt2"}
    export_model(model, paths["eager"])
    for name, target in (("compiled", "model"), ("plugin", "lammps")):
        if paths[name].is_file():
            continue
        start = time.perf_counter()
        compile_model(model, paths[name], target=target)
        print(f"compiled {name} in {time.perf_counter() - start:.0f} s", flush=True)
    return paths


def owned_edges(atoms, cutoff: float, ranks: int) -> float:
    """Largest share of the periodic graph's edges whose receiver one of ``ranks`` equal x-slabs owns.

    Each rank computes every layer for its owned atoms only (lammps_plugin/pair_equimol.cpp), so with
    equal edge costs this is a rank's work relative to one rank; the exchange between layers is extra.
    """
    from equimol.graph import neighbor_list

    _, receiver, _ = neighbor_list(atoms.positions, atoms.cell[:], atoms.pbc, cutoff)
    slab = (atoms.get_scaled_positions()[:, 0] * ranks).astype(int)
    return max(float((slab[receiver] == rank).mean()) for rank in range(ranks))


# ------------------------------------------------------------------------------------------- worker
def worker(args: argparse.Namespace) -> None:
    """One timed LAMMPS run on this rank (under mpirun); rank 0 writes ``{"seconds", "steps", ...}``."""
    from mpi4py import MPI

    from equimol.lammps import EquimolFix, create_box_from_atoms, load_lammps, plugin_commands

    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    atoms = box(args.atoms)
    lmp = load_lammps()(cmdargs=["-log", "none", "-screen", "none", "-nocite"], comm=comm)
    lmp.commands_string("units metal\natom_style atomic\natom_modify map yes\nnewton on")
    create_box_from_atoms(lmp, atoms, ELEMENTS)
    if args.coupling == "plugin":
        lmp.commands_string(plugin_commands(args.model, ELEMENTS, plugin=args.plugin))
    else:
        lmp.commands_string("fix equimol all external pf/callback 1 1\nfix_modify equimol energy yes virial yes")
        EquimolFix(lmp, args.model, ELEMENTS, comm=comm)
    lmp.commands_string("timestep 0.001\nneighbor 1.0 bin\nfix nve all nve\nthermo 1000\nrun 2")
    comm.Barrier()
    start = time.perf_counter()
    lmp.command(f"run {args.steps} pre no post no")
    comm.Barrier()
    seconds = time.perf_counter() - start
    energy = lmp.get_thermo("etotal")
    lmp.close()
    if comm.Get_rank() == 0:
        Path(args.result).write_text(json.dumps({"seconds": seconds, "steps": args.steps, "etotal": energy}))


def run_worker(coupling: str, model: Path, plugin: Path, atoms: int, steps: int, ranks: int, folder: Path) -> dict:
    result = folder / f"{coupling}_{atoms}_{ranks}_{model.suffix[1:]}.json"
    launcher = Path(sys.executable).parent / "mpirun"
    command = [str(launcher), "-np", str(ranks), sys.executable, str(Path(__file__).resolve()), "worker", "--coupling",
               coupling, "--model", str(model), "--plugin", str(plugin), "--atoms", str(atoms), "--steps", str(steps),
               "--result", str(result)]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=3600, env=environment)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    return json.loads(result.read_text())


def run_ase(model: Path, atoms_wanted: int, steps: int) -> dict:
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from equimol.calculator import EquimolCalculator

    torch.set_num_threads(1)
    atoms = box(atoms_wanted)
    atoms.calc = EquimolCalculator(str(model))
    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dynamics.run(2)
    start = time.perf_counter()
    dynamics.run(steps)
    return {"seconds": time.perf_counter() - start, "steps": steps, "etotal": atoms.get_total_energy()}


# --------------------------------------------------------------------------------------------- main
def measure(args: argparse.Namespace) -> dict:
    from equimol.lammps_plugin import build_plugin

    from equimol.utils.machine import describe_machine

    torch.set_num_threads(1)  # the packages' kernels take the compiling process's thread count
    plugin = build_plugin()
    record = {
        "command": "python benchmarks/lammps_scaling.py " + " ".join(sys.argv[1:]),
        "model": args.model, "model_config": MAIN if args.model == "main" else TINY, "dtype": "float32",
        "machine": describe_machine("cpu"), "threads_per_rank": 1,
        "load_average_1_5_15_min_at_start": list(os.getloadavg()), "rows": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        paths = write_models(Path(args.models or folder), args.model)
        if args.compile_only:
            return record
        record["load_average_1_5_15_min_after_compiling"] = list(os.getloadavg())
        for wanted in args.sizes:
            atoms = box(wanted)
            count, steps = len(atoms), max(3, round(args.atom_steps / len(atoms)))
            config = record["model_config"]
            shares = {k: owned_edges(atoms, config["radial_cutoff"], k) for k in args.ranks}
            record.setdefault("edge_share_per_rank", {})[str(count)] = shares
            runs = [("plugin", paths["plugin"], "pair_style equimol")]
            runs += [("fix", paths["eager"], "fix external, eager"), ("fix", paths["compiled"], "fix external, .pt2")]
            for coupling, model, label in runs:
                for ranks in args.ranks:
                    outcome = run_worker(coupling, model, plugin, wanted, steps, ranks, Path(folder))
                    add_row(record, label, count, ranks, outcome)
            add_row(record, "ASE calculator, eager", count, 1, run_ase(paths["eager"], wanted, steps))
    record["load_average_1_5_15_min_at_end"] = list(os.getloadavg())
    return record


def add_row(record: dict, path: str, atoms: int, ranks: int, outcome: dict) -> None:
    row = {"path": path, "atoms": atoms, "ranks": ranks, **outcome}
    row["atom_steps_per_s"] = atoms * outcome["steps"] / outcome["seconds"]
    record["rows"].append(row)
    print(f"{path:24s} {atoms:6d} atoms, {ranks} rank(s): {row['atom_steps_per_s']:10.1f} atom-steps/s", flush=True)


def write_report(record: dict, stem: str) -> None:
    machine = record["machine"]
    rows = record["rows"]
    baseline = {(row["path"], row["atoms"]): row["atom_steps_per_s"] for row in rows if row["ranks"] == 1}
    fix_one = {atoms: rate for (path, atoms), rate in baseline.items() if path == "fix external, eager"}
    table = [
        [
            row["path"], row["atoms"], row["ranks"], f"{row['atom_steps_per_s']:.1f}",
            f"{row['atom_steps_per_s'] / baseline[(row['path'], row['atoms'])]:.2f}",
            f"{row['atom_steps_per_s'] / fix_one[row['atoms']]:.2f}", row["steps"],
        ]
        for row in rows
    ]  # fmt: skip
    load = record["load_average_1_5_15_min_at_start"][0], record["load_average_1_5_15_min_at_end"][0]
    lines = [
        "# LAMMPS throughput: pair_style equimol vs fix external vs the ASE calculator",
        "",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores, torch {machine['torch']}; one thread per rank;",
        f"1-minute load average {load[0]:.2f} at the start and {load[1]:.2f} at the end.",
        f"Command: `{record['command']}`.",
        f"Model: random float32, `{record['model']}` ({json.dumps(record['model_config'])}), species Cu and Au.",
        "Boxes: rattled fcc Cu with every 4th atom Au, 300 K, NVE 1 fs. Throughput = atoms x timed steps / wall",
        "seconds after 2 warm-up steps; 'vs 1 rank' divides by the same path on 1 rank, 'vs fix external' by",
        "fix external with the eager model on 1 rank.",
        "",
    ]
    header = ["path", "atoms", "ranks", "atom-steps/s", "vs 1 rank", "vs fix external", "timed steps"]
    shares = [f"{atoms} atoms: " + ", ".join(f"{ranks} rank(s) {share:.2f}" for ranks, share in by_ranks.items())
              for atoms, by_ranks in record["edge_share_per_rank"].items()]  # fmt: skip
    notes = ["", "Largest share of the periodic graph's edges that one rank computes (x-slabs; every layer takes the",
             "edges into the rank's own atoms; computed, not timed): " + "; ".join(shares) + "."]  # fmt: skip
    write_markdown(stem, lines + markdown_table(header, table) + notes + target_notes(rows))


def target_notes(rows: list[dict]) -> list[str]:
    """The issue's two targets, read off the table: 2-rank speed-up of the plugin, plugin vs fix external."""
    rate = {(row["path"], row["atoms"], row["ranks"]): row["atom_steps_per_s"] for row in rows}
    lines = ["", "Targets (2 ranks at least 1.7x 1 rank at about 4000 atoms; the plugin on 1 rank no slower than",
             "fix external):"]  # fmt: skip
    for atoms in sorted({row["atoms"] for row in rows}):
        one = rate.get(("pair_style equimol", atoms, 1))
        if one is None:
            continue
        parts = []
        if ("pair_style equimol", atoms, 2) in rate:
            parts.append(f"2 ranks {rate[('pair_style equimol', atoms, 2)] / one:.2f}x 1 rank")
        for label in ("fix external, .pt2", "fix external, eager"):
            if (label, atoms, 1) in rate:
                parts.append(f"1 rank {one / rate[(label, atoms, 1)]:.2f}x {label}")
        lines.append(f"- {atoms} atoms: plugin " + "; ".join(parts) + ".")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("worker", help="one timed LAMMPS run (under mpirun; used by the benchmark)")
    run.add_argument("--coupling", choices=("plugin", "fix"), required=True)
    run.add_argument("--model", required=True)
    run.add_argument("--plugin", required=True)
    run.add_argument("--atoms", type=int, required=True)
    run.add_argument("--steps", type=int, required=True)
    run.add_argument("--result", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 4000], help="atoms per box (about)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="MPI rank counts")
    parser.add_argument("--model", choices=("main", "tiny"), default="main", help="model architecture")
    parser.add_argument("--atom-steps", type=int, default=60000, help="atoms x timed steps per run")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "lammps_scaling"), help="output stem")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing result")
    parser.add_argument("--models", help="folder for the model files: reused if there (default: a temporary one)")
    parser.add_argument("--compile-only", action="store_true", help="write the model files to --models and stop")
    args = parser.parse_args()
    if args.command == "worker":
        worker(args)
        return
    if args.compile_only:
        if not args.models:
            parser.error("--compile-only needs --models FOLDER")
        measure(args)
        return
    check_outputs([f"{args.out}.json", f"{args.out}.md"], args.overwrite)
    record = measure(args)
    write_json(args.out, record)
    write_report(record, args.out)


if __name__ == "__main__":
    main()
