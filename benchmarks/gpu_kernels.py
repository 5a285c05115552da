"""The one prepared GPU run: correctness on the GPU first, then speed (issue 17). See benchmarks/GPU_RUN.md.

    python benchmarks/gpu_kernels.py                       # on a CUDA GPU: the full run (~10 min budget)
    TRITON_INTERPRET=1 python benchmarks/gpu_kernels.py --dry-run     # tiny sizes on a CPU, end to end

Sections, in order, each written into the JSON as soon as it ends (a run cut short keeps what it
measured; a section that raises is recorded with its error and the run goes on): the correctness
checks of :mod:`gpu_checks` (``fused_vs_torch``, ``cueq_vs_cg``, ``fd_forces``, ``nve``), then the speed
sections of :mod:`gpu_speed` (``convolution``, with the achieved fraction of memory bandwidth;
``training``; ``model_scaling`` and ``mace``), which start no new size after ``--budget-s`` seconds.
Every size is in ``FULL`` (``DRY`` for a dry run).

Writes ``benchmarks/gpu_kernels_<gpu>.json`` and ``.png`` (``gpu_kernels_dryrun_cpu.*`` for a dry run,
which checks correctness only: interpreter timings are not speeds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import ROOT, SectionRecord, check_outputs, device_tag

# Peak DRAM bandwidth (bytes/s) of cards NVML may be unable to describe; the name must contain the key.
KNOWN_PEAK_BANDWIDTH = {
    "H200": 4.8e12, "H100 SXM": 3.35e12, "H100 80GB HBM3": 3.35e12, "H100 PCIe": 2.0e12, "H100 NVL": 3.9e12,
    "A100-SXM4-80GB": 2.039e12, "A100-SXM4-40GB": 1.555e12, "A100 80GB PCIe": 1.935e12, "L40S": 0.864e12,
}  # fmt: skip
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


def peak_bandwidth(device: torch.device) -> tuple[float | None, str]:
    """Spec peak DRAM bandwidth in bytes/s and where it came from (NVML, else the table above)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        clock_mhz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
        bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
        return 2.0 * clock_mhz * 1e6 * bus_bits / 8.0, f"NVML: {clock_mhz} MHz x {bus_bits} bit, double data rate"
    except Exception:  # noqa: BLE001 - NVML missing or unsupported: fall back to the table
        pass
    name = torch.cuda.get_device_name(device)
    for key, value in KNOWN_PEAK_BANDWIDTH.items():
        if key in name:
            return value, f"table entry {key!r} (vendor specification)"
    return None, f"unknown card {name!r}"


def bandwidth(device: torch.device, megabytes: int = 1024) -> dict:
    """The card's peak DRAM bandwidth and a measured device-to-device copy's (read + write counted), bytes/s."""
    from gpu_speed import timed

    source = torch.empty(megabytes * 2**20 // 4, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    copy = 2 * source.numel() * 4 / timed(lambda: target.copy_(source), device, warmup=2, repeats=8)
    peak, source_of_peak = peak_bandwidth(device)
    return {"peak_bytes_per_s": peak, "peak_source": source_of_peak, "copy_bytes_per_s": copy}


def molecule(data_dir: Path, dry_run: bool):
    """Frame 0 of 3BPA ``test_300K.xyz`` (27 atoms) if present, else ASE's ethanol; CH4 for a dry run."""
    import ase.build
    import ase.io

    if dry_run:  # the Triton interpreter costs ~seconds per call: the smallest molecule of the species,
        atoms = ase.build.molecule("CH4")  # displaced so that symmetry cancels no force
        atoms.positions += np.random.default_rng(0).normal(scale=0.1, size=atoms.positions.shape)
        return atoms, "ase.build.molecule('CH4'), positions + N(0, 0.1 Å) (dry run)"
    path = data_dir / "3bpa" / "test_300K.xyz"
    if path.is_file():
        atoms = ase.io.read(path, index=0)
        atoms.calc = None
        return atoms, str(path)
    return ase.build.molecule("CH3CH2OH"), "ase.build.molecule('CH3CH2OH')"


def checks_passed(record: dict) -> dict:
    """``section -> all rows passed`` for the correctness sections that ran (None: nothing judged)."""
    verdict = {}
    for name in ("fused_vs_torch", "cueq_vs_cg", "fd_forces", "nve"):
        result = record["sections"].get(name, {})
        rows = [r for r in (result.get("result") or []) if "passed" in r]
        verdict[name] = False if "error" in result else (all(r["passed"] for r in rows) if rows else None)
    return verdict


def plot(record: dict, path: Path) -> None:
    """Left: forward+backward ms of every convolution series against L. Right: E+F s against atoms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    sections = record["sections"]
    convolution, models = {}, {}
    for row in sections.get("convolution", {}).get("result") or []:
        for label, values in row.get("series", {}).items():
            convolution.setdefault(label, []).append((row["lmax"], 1e3 * values["forward_backward_s"]))
    mace_rows = (sections.get("mace", {}).get("result") or {}).get("rows", [])
    for row in (sections.get("model_scaling", {}).get("result") or []) + mace_rows:
        if "energy_forces_s" in row:
            models.setdefault(row["label"], []).append((row["atoms"], row["energy_forces_s"]))
    left.set(xlabel="L", ylabel="forward+backward (ms)", title="convolution (gather, TP, scatter)")
    right.set(xlabel="atoms", ylabel="energy+forces (s)", xscale="log", title="model, water boxes")
    for axis, series in ((left, convolution), (right, models)):
        for label, points in sorted(series.items()):
            axis.plot(*zip(*sorted(points)), marker="o", label=label)
        axis.set(yscale="log")
        if series:
            axis.legend(fontsize=7)
    machine = record["machine"]
    figure.suptitle(f"{record['kind']}: {machine.get('gpu') or machine.get('cpu')}, torch {machine['torch']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def prefit(degrees: list[int], channels: int) -> int:
    """Fit and cache (``$EQUIMOL_CACHE_DIR``) the rank-7L^2 cp factors of the convolution, on any CPU."""
    from equimol.microbench.tp import benchmark_irreps
    from equimol.tp import TensorProduct

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
    check_outputs([path, path.with_suffix(".png")], args.overwrite)
    atoms, molecule_source = molecule(Path(args.data), args.dry_run)
    record = {
        "benchmark": "gpu_kernels",
        "kind": "CPU interpreter dry run: correctness only, timings are not speeds" if args.dry_run else "GPU run",
        "machine": machine,
        "load_average": os.getloadavg(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
        "sizes": sizes,
        "speed_dtype": args.dtype,
        "molecule": molecule_source,
    }
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
                record["bandwidth"] = measured = bandwidth(device)
                gpu_speed.add_bandwidth(result, measured["peak_bytes_per_s"], measured["copy_bytes_per_s"])
    record["checks_passed"] = checks_passed(record)
    run.write()
    try:
        plot(record, path.with_suffix(".png"))
    except Exception as error:  # noqa: BLE001 - a plot failure must not hide the JSON
        context.log(f"no plot: {type(error).__name__}: {error}")
    context.log(json.dumps(record["checks_passed"]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
