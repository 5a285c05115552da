"""The one prepared GPU run: correctness on the GPU first, then speed (issue 17). See benchmarks/GPU_RUN.md.

    python benchmarks/gpu_kernels.py                       # on a CUDA GPU: the full run (~10 min budget)
    TRITON_INTERPRET=1 python benchmarks/gpu_kernels.py --dry-run     # tiny sizes on a CPU, end to end

Sections, in order, each written into the JSON as soon as it ends (a run cut short keeps what it
measured; a section that raises is recorded with its error and the run goes on): the correctness
checks of :mod:`gpu_checks` (``fused_vs_torch``, ``cueq_vs_cg``, ``fd_forces``, ``nve``), then the speed
sections of :mod:`gpu_speed` (``convolution``, with the achieved fraction of memory bandwidth;
``training``; ``model_scaling`` and ``mace``), which start no new size after ``--budget-s`` seconds.
Every size is in ``FULL`` (``DRY`` for a dry run).

Writes ``benchmarks/gpu_kernels_<gpu>.json`` and its plots ``_convolution.png`` and ``_model.png``
(``gpu_kernels_dryrun_cpu*`` for a dry run, which checks correctness only: interpreter timings are not speeds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import ase.build
import ase.io
import numpy as np
import torch
from _common import ROOT, SectionRecord, check_outputs, device_tag

from equimol.microbench.tp import benchmark_irreps
from equimol.tp import TensorProduct

#: Every size of the run; a dry run (``DRY``) shrinks what is slow on the Triton interpreter.
FULL = {
    "lmax": [1, 2, 3, 4], "lmax_factored": [6], "channels": 64, "edges": 100_000, "degree": 16, "warmup": 3,
    "repeats": 20, "check_lmax": 2, "check_channels": 16, "check_edges": 20_000, "check_nodes": 2_000,
    "cueq_lmax": 3, "fd_components": 12, "model_channels": 16, "model_lmax": 2, "nve_steps": 4000,
    "train_steps": 20, "train_warmup": 2, "train_frames": 50, "train_atoms_per_frame": None, "train_model": {},
    "lattices": [7, 15, 32], "scaling_channels": 32, "model_repeats": 5, "mace_timeout_s": 300.0,
}  # fmt: skip
DRY = FULL | {
    "lmax": [1, 2], "lmax_factored": [], "channels": 4, "edges": 64, "warmup": 0, "repeats": 1, "check_channels": 2,
    "check_edges": 40, "check_nodes": 6, "fd_components": 2, "model_channels": 2, "model_lmax": 1, "nve_steps": 4,
    "train_steps": 1, "train_warmup": 1, "train_frames": 2, "train_atoms_per_frame": 5,
    "train_model": {"channels": 2, "lmax": 1}, "lattices": [1], "scaling_channels": 4, "model_repeats": 1,
    "mace_timeout_s": 1200.0,
}  # fmt: skip
SPEED_SECTIONS = ("convolution", "training", "model_scaling", "mace")


@dataclass
class Context:
    """What every section reads: the device, the sizes (``FULL`` or ``DRY``), the dtype of the speed
    sections, the deadline after which no new speed size starts, the molecule and the arguments."""

    device: torch.device
    sizes: dict
    dtype: torch.dtype
    deadline: float
    molecule: object
    args: argparse.Namespace

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    @staticmethod
    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)


def molecule(data_dir: Path, dry_run: bool):
    """Frame 0 of 3BPA ``test_300K.xyz`` (27 atoms) if present, else ASE's ethanol; CH4 for a dry run."""
    if dry_run:  # the Triton interpreter costs ~seconds per call: the smallest molecule of the species,
        atoms = ase.build.molecule("CH4")  # displaced so that symmetry cancels no force
        atoms.positions += np.random.default_rng(0).normal(scale=0.1, size=atoms.positions.shape)
        return atoms, "ase.build.molecule('CH4'), positions + N(0, 0.1 Å) (dry run)"
    path = data_dir / "3bpa" / "test_300K.xyz"
    if path.is_file():  # the sections take copies, which leave the file's calculator behind
        return ase.io.read(path, index=0), str(path)
    return ase.build.molecule("CH3CH2OH"), "ase.build.molecule('CH3CH2OH')"


def checks_passed(record: dict) -> dict:
    """``section -> all rows passed`` for the correctness sections that ran (None: nothing judged)."""
    verdict = {}
    for name in ("fused_vs_torch", "cueq_vs_cg", "fd_forces", "nve"):
        result = record["sections"].get(name, {})
        rows = [r for r in (result.get("result") or []) if "passed" in r]
        verdict[name] = False if "error" in result else (all(r["passed"] for r in rows) if rows else None)
    return verdict


def plot_paths(path: Path) -> list[Path]:
    """The two PNGs beside the JSON ``path``: convolution time against L, model E+F time against atoms."""
    return [path.with_name(f"{path.stem}_{name}.png") for name in ("convolution", "model")]


def plot(record: dict, path: Path) -> None:
    """The plots of ``equimol bench tp`` and ``equimol bench model`` of the convolution and model sections."""
    from equimol.microbench.model import plot_model
    from equimol.microbench.report import plot_tp

    sections = record["sections"]
    convolution = [
        {"label": label, "lmax": row["lmax"], "channels": row["channels"], "edges": row["edges"], **values}
        for row in sections.get("convolution", {}).get("result") or []
        for label, values in row.get("series", {}).items()
    ]
    mace_rows = (sections.get("mace", {}).get("result") or {}).get("rows", [])
    model_rows = (sections.get("model_scaling", {}).get("result") or []) + mace_rows
    models = [{"system": "water", **row} for row in model_rows if "energy_forces_s" in row]
    settings = {"dtype": record["speed_dtype"], "channels": record["sizes"]["scaling_channels"], "lmax": 2}
    settings["radial_cutoff"] = 5.0
    for plotter, measurements, png in zip((plot_tp, plot_model), (convolution, models), plot_paths(path)):
        if measurements:
            plotter({"machine": record["machine"], "settings": settings, "measurements": measurements}, png)


def prefit(degrees: list[int], channels: int) -> int:
    """Fit and cache (``$EQUIMOL_CACHE_DIR``) the rank-7L^2 cp factors of the convolution, on any CPU."""
    for lmax in degrees:
        start = time.perf_counter()
        tp = TensorProduct(*benchmark_irreps(lmax, channels), backend="cp", cp_rank="7L2", dtype=torch.float64)
        seconds = time.perf_counter() - start
        print(f"L={lmax}: cp rank {tp.rank}, relative error {tp.relative_error:.1e}, {seconds:.1f} s")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU under TRITON_INTERPRET=1")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --dry-run")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="speed sections")
    budget_help = "seconds after which no new speed size starts (400; dry run 7200)"
    parser.add_argument("--budget-s", type=float, default=None, help=budget_help)
    parser.add_argument("--model", help="trained model file for the NVE check (default: a random-init model)")
    parser.add_argument("--data", default=str(ROOT / ".gpu" / "data"), help="folder holding 3bpa/ (see GPU_RUN.md)")
    parser.add_argument("--mace-python", default=sys.executable, help="Python that runs benchmarks/gpu_mace.py")
    parser.add_argument("--mace-pythonpath", default=os.environ.get("EQUIMOL_MACE_PYTHONPATH", ""))
    parser.add_argument("--skip", default="", help="comma-separated sections to skip")
    parser.add_argument("--out", help="JSON path (default: benchmarks/gpu_kernels_<gpu>.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace the JSON and its plot if they exist")
    parser.add_argument("--prefit", action="store_true", help="only fit and cache the cp factors (CPU), then exit")
    args = parser.parse_args(argv)
    if args.prefit:
        return prefit(FULL["lmax"] + FULL["lmax_factored"], FULL["channels"])
    device = torch.device(args.device or ("cpu" if args.dry_run else "cuda"))
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("gpu_kernels.py: error: needs a CUDA GPU, or TRITON_INTERPRET=1 with --dry-run on a CPU")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_kernels.py: error: --device cuda but torch sees no GPU")
    import gpu_checks
    import gpu_speed

    from equimol.utils.machine import describe_machine

    sizes, machine = (DRY if args.dry_run else FULL), describe_machine(device)
    name = "dryrun_cpu" if args.dry_run else device_tag(machine)
    path = Path(args.out or ROOT / "benchmarks" / f"gpu_kernels_{name}.json")
    check_outputs([path, *plot_paths(path)], args.overwrite)
    atoms, molecule_source = molecule(Path(args.data), args.dry_run)
    record = {
        "benchmark": "gpu_kernels",
        "kind": "CPU interpreter dry run: correctness only, timings are not speeds" if args.dry_run else "GPU run",
        "machine": machine, "load_average": os.getloadavg(), "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
        "sizes": sizes, "speed_dtype": args.dtype, "molecule": molecule_source,
    }  # fmt: skip
    run, skip = SectionRecord(record, path), set(filter(None, args.skip.split(",")))
    args.budget_s = args.budget_s or (7200.0 if args.dry_run else 400.0)
    context = Context(device, sizes, getattr(torch, args.dtype), time.monotonic() + args.budget_s, atoms, args)
    for section in ("fused_vs_torch", "cueq_vs_cg", "fd_forces", "nve", *SPEED_SECTIONS):
        if section in skip:
            record["sections"][section] = {"skipped": "--skip"}
        elif section in SPEED_SECTIONS and context.out_of_time():
            record["sections"][section] = {"skipped": f"time budget of {args.budget_s} s spent"}
        else:
            result = run.section(section, getattr(gpu_checks, section, None) or getattr(gpu_speed, section), context)
            if section == "convolution" and device.type == "cuda" and result is not None:
                record["bandwidth"] = gpu_speed.add_bandwidth(result, device)
    record["checks_passed"] = checks_passed(record)
    run.write()
    try:
        plot(record, path)
    except Exception as error:  # noqa: BLE001 - a plot failure must not hide the JSON
        context.log(f"no plot: {type(error).__name__}: {error}")
    context.log(json.dumps(record["checks_passed"]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
