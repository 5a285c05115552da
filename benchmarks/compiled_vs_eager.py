"""Energy+forces time of a compiled model file (``equimol export --compile``) against the eager model.

    .venv/bin/python benchmarks/compiled_vs_eager.py [--mode export|aotinductor] [--file PATH] [--out STEM]

Model: the tests' tiny random float64 Cu/Au potential (8 channels, L = 1, 1 layer, cutoff 4 Å).
The compiled file is written (or reused with ``--file``), then eager ``model(graph)`` and the
compiled file's ``CompiledPotential(graph)`` (energy, forces and stress) alternate on fcc Cu/Au
boxes of 32, 108 and 256 atoms in one process, one intra-op thread; medians, ratios and the
largest output difference are recorded with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _common import markdown_table, write_json, write_markdown  # noqa: E402
from lammps_case import cu_au_box  # noqa: E402
from test_calculator import small_model  # noqa: E402

from equimol.compiled import compile_model, load_compiled  # noqa: E402
from equimol.graph import atoms_to_graph  # noqa: E402
from equimol.utils.machine import describe_machine  # noqa: E402


def timed(model, graph) -> tuple[float, dict]:
    start = time.perf_counter()
    out = model(graph, compute_forces=True, compute_stress=True)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="export", choices=("export", "aotinductor"))
    parser.add_argument("--file", help="compiled file of this script's model to reuse (written when absent)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "compiled_vs_eager"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = small_model([29, 79], energy_scale=5.0, num_layers=1).eval()
    path = Path(args.file or f"/tmp/equimol_compiled_vs_eager_{args.mode}.pt2")
    record = {"mode": args.mode, "machine": describe_machine("cpu"), "load_average_start": list(os.getloadavg())}
    if not path.is_file():
        start = time.perf_counter()
        compile_model(model, path, mode=args.mode)
        record["compile_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    compiled = load_compiled(path)
    record["load_seconds"] = time.perf_counter() - start
    record["results"] = []
    for repeat in (2, 3, 4):
        graph = atoms_to_graph(cu_au_box(temperature_k=0.0, repeat=repeat), 4.0, torch.float64)
        times = {"eager": [], "compiled": []}
        outputs = {}
        for _ in range(args.repeats):
            for name, candidate in (("eager", model), ("compiled", compiled)):
                seconds, outputs[name] = timed(candidate, graph)
                times[name].append(seconds)
        difference = max(
            float((outputs["eager"][key] - outputs["compiled"][key]).abs().max())
            for key in ("energy", "forces", "stress")
        )
        medians = {name: statistics.median(values) for name, values in times.items()}
        entry = {
            "atoms": graph.num_nodes,
            "edges": int(graph.edge_index.shape[1]),
            "median_ms": {name: 1000 * value for name, value in medians.items()},
            "eager_over_compiled": medians["eager"] / medians["compiled"],
            "max_abs_difference": difference,
        }
        record["results"].append(entry)
        print(json.dumps(entry), flush=True)
    record["load_average_end"] = list(os.getloadavg())
    write_json(args.out, record)
    machine = record["machine"]
    lines = [
        f"# Compiled model file ({args.mode}) against eager: energy, forces and stress",
        "",
        "Model: tests' tiny random float64 Cu/Au potential (8 channels, L = 1, 1 layer, cutoff 4 Å); "
        f"{args.repeats} alternating calls, median.",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores, torch {machine['torch']}, 1 thread; load average "
        f"{record['load_average_start'][0]:.2f} at start, {record['load_average_end'][0]:.2f} at end (shared).",
        f"Command: `.venv/bin/python benchmarks/compiled_vs_eager.py --mode {args.mode}`. Loading the file took "
        f"{record['load_seconds']:.0f} s.",
        "",
    ]
    header = ["atoms", "edges", "eager (ms)", "compiled (ms)", "eager / compiled", "max abs difference"]
    rows = [
        [e["atoms"], e["edges"], *(f"{e['median_ms'][k]:.1f}" for k in ("eager", "compiled"))]
        + [f"{e['eager_over_compiled']:.2f}", f"{e['max_abs_difference']:.1e}"]
        for e in record["results"]
    ]
    write_markdown(args.out, lines + markdown_table(header, rows))


if __name__ == "__main__":
    main()
