"""The one prepared GPU run: correctness on the GPU first, then speed (issue 17). See benchmarks/GPU_RUN.md.

    python benchmarks/gpu_kernels.py                       # on a CUDA GPU: the full run (~10 min budget)
    TRITON_INTERPRET=1 python benchmarks/gpu_kernels.py --dry-run     # tiny sizes on a CPU, end to end

Sections, in order (each writes its result into the JSON as soon as it ends, so a run cut short keeps
what it measured; a section that raises is recorded with its error and the run goes on):

1. ``fused_vs_torch`` - every backend with a fused kernel, float32 and float64, atomics and
   deterministic, against its torch path (:mod:`gpu_checks`);
2. ``cueq_vs_cg`` - the ``cueq`` backend (cuEquivariance's CUDA kernel when installed) against ``cg``;
3. ``fd_forces`` - model forces against central differences in float64, every backend and kernel;
4. ``nve`` - 2 ps velocity-Verlet NVE of a 3BPA molecule: the trained model (``--model``), and random-init
   models of the backends with a fused kernel through that kernel;
5. ``convolution`` - gather + TP + scatter at L = 1..4 (and 6 for gaunt and cp), 64 channels, 100k
   edges: e3nn with scatter, the equimol torch paths, the Triton kernels, cuEquivariance and
   OpenEquivariance, forward and forward+backward, with the achieved fraction of memory bandwidth
   (:mod:`gpu_speed`);
6. ``training`` - optimizer steps per second on 3BPA (:mod:`gpu_model`);
7. ``model_scaling`` / ``mace`` - model E+F on ~1k/10k/100k-atom water boxes, and MACE (e3nn and
   cuEquivariance, same weights) on the same boxes (:mod:`gpu_model`, ``gpu_mace.py``).

Speed sections (5-7) start no new size after ``--budget-s`` seconds from the start of the run.

Writes ``benchmarks/gpu_kernels_<gpu>.json`` and ``.png`` (``gpu_kernels_dryrun_cpu.*`` for a dry run,
which checks correctness only: interpreter timings are not speeds).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from _common import ROOT, check_outputs

# Peak DRAM bandwidth (bytes/s) of cards NVML may be unable to describe; the name must contain the key.
KNOWN_PEAK_BANDWIDTH = {
    "H200": 4.8e12,
    "H100 SXM": 3.35e12,
    "H100 80GB HBM3": 3.35e12,
    "H100 PCIe": 2.0e12,
    "H100 NVL": 3.9e12,
    "A100-SXM4-80GB": 2.039e12,
    "A100-SXM4-40GB": 1.555e12,
    "A100 80GB PCIe": 1.935e12,
    "L40S": 0.864e12,
}
FULL = {"lmax": [1, 2, 3, 4], "lmax_factored": [6], "channels": 64, "edges": 100_000, "check_edges": 20_000}
FULL |= {"check_nodes": 2_000, "lattices": [7, 15, 32], "nve_steps": 4000, "fd_components": 12, "train_steps": 20}
DRY = {"lmax": [1, 2], "lmax_factored": [], "channels": 4, "edges": 64, "check_edges": 40, "check_nodes": 6}
DRY |= {"lattices": [1], "nve_steps": 4, "fd_components": 2, "train_steps": 1, "model_channels": 2, "model_lmax": 1}
FULL |= {"model_channels": 16, "model_lmax": 2}
SPEED_SECTIONS = ("convolution", "training", "model_scaling", "mace")


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


def copy_bandwidth(device: torch.device, megabytes: int = 1024) -> float:
    """Measured device-to-device copy bandwidth in bytes/s (read + write counted)."""
    from gpu_speed import timed

    source = torch.empty(megabytes * 2**20 // 4, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    return 2 * source.numel() * 4 / timed(lambda: target.copy_(source), device, warmup=2, repeats=8)


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


class Run:
    """Runs sections, records results, errors and seconds, and rewrites the JSON after each one."""

    def __init__(self, record: dict, path: Path) -> None:
        self.record, self.path = record, path
        self.record.setdefault("sections", {})

    def section(self, name: str, function, *args, **kwargs) -> None:
        start = time.perf_counter()
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
        try:
            result = {"result": function(*args, **kwargs)}
        except Exception as error:  # noqa: BLE001 - one broken section must not lose the others
            result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-2000:]}
        result["seconds"] = time.perf_counter() - start
        self.record["sections"][name] = result
        self.write()

    def write(self) -> None:
        self.path.write_text(json.dumps(self.record, indent=1, default=str) + "\n", encoding="utf-8")


def checks_passed(record: dict) -> dict:
    """``section -> all rows passed`` for the correctness sections that ran."""
    verdict = {}
    for name in ("fused_vs_torch", "cueq_vs_cg", "fd_forces", "nve"):
        result = record["sections"].get(name, {})
        if "error" in result:
            verdict[name] = False
            continue
        rows = result.get("result") or []
        rows = rows if isinstance(rows, list) else [rows]
        ran = [r for r in rows if "passed" in r]
        verdict[name] = all(r["passed"] for r in ran) if ran else None  # None: nothing judged
    return verdict


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU under TRITON_INTERPRET=1")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --dry-run")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="speed sections")
    parser.add_argument(
        "--budget-s", type=float, default=None, help="seconds after which no new speed size starts (400; dry run 7200)"
    )
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
    import gpu_model
    import gpu_speed

    from equimol.utils.machine import describe_machine

    sizes = DRY if args.dry_run else FULL
    machine = describe_machine(device)
    name = "dryrun_cpu" if args.dry_run else re.sub(r"[^A-Za-z0-9]+", "_", str(machine.get("gpu", "cpu"))).strip("_")
    path = Path(args.out or ROOT / "benchmarks" / f"gpu_kernels_{name}.json")
    check_outputs([path, path.with_suffix(".png")], args.overwrite)
    record = {
        "benchmark": "gpu_kernels",
        "kind": "CPU interpreter dry run: correctness only, timings are not speeds" if args.dry_run else "GPU run",
        "machine": machine,
        "load_average": os.getloadavg(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
        "sizes": sizes,
        "speed_dtype": args.dtype,
    }
    run, skip = Run(record, path), set(filter(None, args.skip.split(",")))
    args.budget_s = args.budget_s or (7200.0 if args.dry_run else 400.0)
    deadline = time.monotonic() + args.budget_s
    dtype = getattr(torch, args.dtype)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    atoms, molecule_source = molecule(Path(args.data), args.dry_run)
    record["molecule"] = molecule_source
    check = (device, 2, 16 if not args.dry_run else 2, sizes["check_nodes"], sizes["check_edges"])
    sections = {
        "fused_vs_torch": (gpu_checks.fused_vs_torch, check),
        "cueq_vs_cg": (gpu_checks.cueq_vs_cg, (device, 3, *check[2:])),
        "fd_forces": (
            gpu_checks.finite_difference_forces,
            (device, atoms, sizes["fd_components"], sizes["model_channels"], sizes["model_lmax"]),
        ),
        "nve": (nve_section, (gpu_checks, device, atoms, args.model, sizes["nve_steps"])),
        "convolution": (
            gpu_speed.convolution_speed,
            (device, sizes["lmax"], sizes["lmax_factored"], sizes["channels"], sizes["edges"], 16, dtype),
            {"warmup": 3 if not args.dry_run else 0, "repeats": 20 if not args.dry_run else 1},
        ),
        "training": (
            gpu_model.training_steps,
            (device, Path(args.data) / "3bpa" / "train_300K.xyz", gpu_checks.kernels_for, torch.float64),
            {"steps": sizes["train_steps"], "warmup": 2 if not args.dry_run else 1}
            | ({"overrides": {"channels": 2, "lmax": 1}, "atoms_per_frame": 5, "frames": 2} if args.dry_run else {}),
        ),
        "model_scaling": (
            gpu_model.model_scaling,
            (device, sizes["lattices"], gpu_checks.kernels_for, 32 if not args.dry_run else 4, 2, dtype),
            {"warmup": 1, "repeats": 5 if not args.dry_run else 1},
        ),
        "mace": (
            gpu_model.mace_scaling,
            (args.mace_python, args.mace_pythonpath, str(device), sizes["lattices"], 32 if not args.dry_run else 4),
            {"lmax": 2, "dtype": args.dtype, "timeout": 300.0 if not args.dry_run else 1200.0},
        ),
    }
    for section, (function, positional, *keywords) in sections.items():
        if section in skip:
            record["sections"][section] = {"skipped": "--skip"}
            continue
        if section in SPEED_SECTIONS and time.monotonic() > deadline:
            record["sections"][section] = {"skipped": f"time budget of {args.budget_s} s spent"}
            continue
        extra = dict(keywords[0]) if keywords else {}
        if section in ("convolution", "model_scaling"):
            extra |= {"deadline": deadline, "log": log}
        if section == "training":
            extra["log"] = log
        run.section(section, function, *positional, **extra)
        if section == "convolution" and device.type == "cuda" and "result" in record["sections"][section]:
            peak, source = peak_bandwidth(device)
            copy = copy_bandwidth(device)
            record["bandwidth"] = {"peak_bytes_per_s": peak, "peak_source": source, "copy_bytes_per_s": copy}
            gpu_speed.add_bandwidth(record["sections"][section]["result"], peak, copy)
    record["checks_passed"] = checks_passed(record)
    run.write()
    try:
        from gpu_plot import plot_record

        plot_record(record, path.with_suffix(".png"))
    except Exception as error:  # noqa: BLE001 - a plot failure must not hide the JSON
        log(f"no plot: {type(error).__name__}: {error}")
    log(json.dumps(record["checks_passed"]))
    print(f"wrote {path}")
    return 0


def prefit(degrees: list[int], channels: int) -> int:
    """Fit and cache (``$EQUIMOL_CACHE_DIR``) the rank-7L^2 cp factors of the convolution, on any CPU."""
    from equimol.microbench.tp import benchmark_irreps
    from equimol.tp import TensorProduct

    for lmax in degrees:
        start = time.perf_counter()
        tp = TensorProduct(*benchmark_irreps(lmax, channels), backend="cp", cp_rank="7L2", dtype=torch.float64)
        print(
            f"L={lmax}: cp rank {tp.rank}, relative error {tp.relative_error:.1e}, {time.perf_counter() - start:.1f} s"
        )
    return 0


def nve_section(gpu_checks, device: torch.device, atoms, model_file: str | None, steps: int) -> list[dict]:
    """NVE of the trained model (``--model``; its own kernels), then of a random-init model of every
    backend with a fused kernel, run through that kernel (the path whose forces must conserve energy)."""
    from equimol.tp import factored_backends

    runs = []
    if model_file:
        from equimol.export import read_model_file

        backend = read_model_file(model_file)["model_config"].get("tp_backend", "cg")
        runs += [(model_file, kernel) for kernel in gpu_checks.kernels_for(backend, device)]
    for backend in factored_backends():
        if "triton" in gpu_checks.kernels_for(backend, device):
            runs.append((gpu_checks.small_model_config(backend, "triton", "float64"), "triton"))
    rows = []
    for source, kernel in runs:
        model = gpu_checks.model_with_kernel(source, kernel, device)
        label = source if isinstance(source, str) else f"random-init {source['tp_backend']}"
        rows.append({"model": label, "kernel": kernel, **gpu_checks.nve_drift(device, atoms, model, steps)})
    return rows


if __name__ == "__main__":
    sys.exit(main())
