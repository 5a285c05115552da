"""Many-body block: equimol's Gaunt self-product and CG symmetric product against MACE's symmetric contraction.

The two live in different virtual environments (equimol's ``.venv``; mace-torch 0.3.16 with e3nn 0.4.4
in ``.venv-mace``), so this script is a driver that launches one worker per environment, back to
back for every degree, with the same torch thread count, and records the load average around each
worker. Every worker times, at the same shapes (``C x (0e + 1o + ... + Le)`` in and out, ``N`` nodes,
``correlation`` 3, one-hot elements), the forward and the forward + backward (gradients of the node
features and of every weight) with interleaved repeats, and reports medians of wall and process CPU
time (CPU time leaves out the slices a loaded machine gives to other jobs).

    python benchmarks/many_body_vs_mace.py --threads 1 \\
        --json benchmarks/many_body_vs_mace_cpu.json --markdown benchmarks/many_body_vs_mace_cpu.md

Series: ``mace`` (``mace.modules.symmetric_contraction.SymmetricContraction``, the block of MACE's
product basis), ``equimol/cg`` (:class:`equimol.manybody.cg.SymmetricProduct`, recursive uuu CG products)
and ``equimol/gaunt-grid`` (:class:`equimol.manybody.gaunt.GauntSelfProduct`). They are not the same
function: MACE weighs every generalized coupling path, the Gaunt product one fixed combination per degree
and order (see ``equimol/manybody/gaunt.py``), so the table compares costs at equal shapes, not equal
expressivity.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from _common import ROOT, check_outputs, interleaved, markdown_table

#: The settings (and defaults) every worker gets and the record keeps: ``worker``'s arguments after ``lmax``, then
#: the threads.
SETTINGS = {"channels": 32, "nodes": 500, "elements": 4, "correlation": 3, "repeats": 5, "threads": 1}


def _irreps_string(channels: int, lmax: int) -> str:
    return " + ".join(f"{channels}x{l}{'eo'[l % 2]}" for l in range(lmax + 1))


def _time_series(series: dict, make_inputs, repeats: int, warmup: int) -> dict:
    """Interleave ``series`` (name -> module) repeat by repeat; medians in seconds."""
    import torch

    def measure(module) -> tuple[float, float, float]:
        inputs = make_inputs()
        with torch.no_grad():
            start = time.perf_counter()
            module(*inputs)
            forward = time.perf_counter() - start
        start, cpu = time.perf_counter(), time.process_time()
        out = module(*inputs)
        parameters = [inputs[0], *[p for p in module.parameters() if p.requires_grad]]
        torch.autograd.grad(out, parameters, torch.ones_like(out))
        return forward, time.perf_counter() - start, time.process_time() - cpu

    times = interleaved({name: partial(measure, module) for name, module in series.items()}, repeats, warmup)
    keys = ("forward_s", "forward_backward_s", "forward_backward_cpu_s")
    return {name: {key: statistics.median(c) for key, c in zip(keys, zip(*rows))} for name, rows in times.items()}


def worker(kind: str, lmax: int, channels: int, nodes: int, elements: int, correlation: int, repeats: int) -> dict:
    """Time the series of one environment at one degree; runs inside that environment."""
    import torch

    generator = torch.Generator().manual_seed(lmax)
    element = torch.randint(0, elements, (nodes,), generator=generator)
    dim = (lmax + 1) ** 2
    if kind == "mace":
        from e3nn import o3
        from mace.modules.symmetric_contraction import SymmetricContraction

        irreps = o3.Irreps(_irreps_string(channels, lmax))
        module = SymmetricContraction(irreps, irreps, correlation=correlation, num_elements=elements).float()
        one_hot = torch.nn.functional.one_hot(element, elements).float()

        def make_inputs():  # MACE's layout: [N, C, (L + 1)^2]
            x = torch.randn(nodes, channels, dim, generator=generator).requires_grad_(True)
            return x, one_hot

        series = {"mace": module}
    else:
        from equimol.manybody.cg import SymmetricProduct
        from equimol.manybody.gaunt import GauntSelfProduct

        irreps = _irreps_string(channels, lmax)
        cg = SymmetricProduct(channels, lmax, correlation, elements).float()
        grid = GauntSelfProduct(irreps, correlation, num_elements=elements, strategy="grid", dtype=torch.float32)

        def make_inputs():  # e3nn's mul_ir layout: [N, C (L + 1)^2]
            x = torch.randn(nodes, channels * dim, generator=generator).requires_grad_(True)
            return x, element

        series = {"equimol/cg": cg, "equimol/gaunt-grid": grid}
    results = _time_series(series, make_inputs, repeats, warmup=2)
    for name, module in series.items():
        results[name]["parameters"] = sum(p.numel() for p in module.parameters())
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "series": results}


def _run_worker(python: Path, kind: str, args: argparse.Namespace, lmax: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # e3nn 0.4.4 loads its constants with a plain torch.load
    command = [str(python), __file__, "--worker", kind, "--lmax", str(lmax)]
    command += [f"--{key}={getattr(args, key)}" for key in SETTINGS]
    load_before = os.getloadavg()[0]
    output = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    record = json.loads(output.strip().splitlines()[-1])
    record["load_average_1min"] = [load_before, os.getloadavg()[0]]
    return record


def markdown(record: dict) -> str:
    """The table: median ms and the ratio to MACE, per degree."""
    settings = record["settings"]
    header = ("L", "series", "forward ms", "fwd+bwd ms", "fwd+bwd / mace", "fwd+bwd CPU ms", "CPU / mace")
    header += ("parameters", "load")
    rows = []
    for point in record["points"]:
        mace = point["mace"]["series"]["mace"]
        for worker_name in ("mace", "equimol"):
            load = "{:.1f} / {:.1f}".format(*point[worker_name]["load_average_1min"])
            for name, values in point[worker_name]["series"].items():
                both, cpu = values["forward_backward_s"], values["forward_backward_cpu_s"]
                rows.append([point["lmax"], name, f"{1e3 * values['forward_s']:.2f}", f"{1e3 * both:.2f}"])
                rows[-1] += [f"{both / mace['forward_backward_s']:.2f}", f"{1e3 * cpu:.2f}"]
                rows[-1] += [f"{cpu / mace['forward_backward_cpu_s']:.2f}", values["parameters"], load]
    lines = [
        f"# Many-body block vs MACE symmetric contraction ({record['machine']})",
        "",
        f"float32, {settings['channels']} channels, {settings['nodes']} nodes, correlation {settings['correlation']}, "
        f"{settings['elements']} elements, {settings['threads']} thread(s), median of {settings['repeats']} repeats; "
        "forward+backward = gradients of the node features and all weights. One run of "
        "`benchmarks/many_body_vs_mace.py`; load = 1-minute load average before/after each worker.",
        "",
        *markdown_table(header, rows),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["mace", "equimol"], help=argparse.SUPPRESS)
    parser.add_argument("--lmax", default="1,2,3", help="degrees, e.g. 1,2,3")
    for key, default in SETTINGS.items():
        parser.add_argument(f"--{key}", type=int, default=default)
    parser.add_argument("--mace-python", default=str(ROOT / ".venv-mace" / "bin" / "python"))
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--markdown", dest="markdown_path")
    parser.add_argument("--overwrite", action="store_true", help="replace --json and --markdown if they exist")
    args = parser.parse_args()
    check_outputs([path for path in (args.json_path, args.markdown_path) if path], args.overwrite)
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(worker(args.worker, int(args.lmax), *(getattr(args, key) for key in list(SETTINGS)[:-1]))))
        return
    from equimol.utils.machine import cpu_model

    points = []
    for lmax in [int(v) for v in args.lmax.split(",")]:
        point = {"lmax": lmax}
        point["mace"] = _run_worker(Path(args.mace_python), "mace", args, lmax)
        point["equimol"] = _run_worker(Path(sys.executable), "equimol", args, lmax)
        points.append(point)
        print(json.dumps(point), file=sys.stderr, flush=True)
    record = {"benchmark": "many_body_vs_mace",
              "machine": f"{cpu_model()} ({os.cpu_count()} cores), Python {platform.python_version()}",
              "settings": {key: getattr(args, key) for key in SETTINGS}, "points": points}  # fmt: skip
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    table = markdown(record)
    if args.markdown_path:
        Path(args.markdown_path).write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
