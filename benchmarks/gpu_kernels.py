"""GPU benchmark of the fused Triton message kernels against the torch path and e3nn.

One command on a machine with a CUDA GPU (from the repository root)::

    python benchmarks/gpu_kernels.py                 # L = 1..4, 64 channels, 100k edges, float32

The ``cp`` factors are fitted on first use and cached (``$EQUIMOL_CACHE_DIR``); fitting ``L = 1..4``
took 22 s on a 2-core CPU shared with other jobs (``L = 4``: 20 s, rank 112, relative error 2.3e-4).
To keep GPU time for the measurement, fit them beforehand on any machine and carry the cache along::

    EQUIMOL_CACHE_DIR=benchmarks/.cp_cache python benchmarks/gpu_kernels.py --prefit   # CPU only
    EQUIMOL_CACHE_DIR=benchmarks/.cp_cache python benchmarks/gpu_kernels.py            # on the GPU

writes ``benchmarks/gpu_kernels_<gpu>.json`` (the GPU named in the file name and in the record) and
prints a table. For each ``L`` the convolution ``m_i = sum_{e: j -> i} TP(x_j, Y(r_e), w_e)`` with
``C x (0e + 1o + ... + L)`` features and ``0e + ... + L`` edge harmonics is timed (CUDA events,
median of ``--repeats`` after warm-up and Triton autotuning), forward and forward+backward
(gradients of node features, edge attributes and weights, as forces need), for:

* ``e3nn``: ``o3.TensorProduct`` (uvu, per-edge weights) + gather + ``index_add`` (what the ``cg``
  backend runs);
* ``cp[torch]`` / ``cp[triton]`` / ``cp[triton,det]``: the ``cp`` backend (rank ``7 L^2``), torch path,
  fused kernel with atomics, fused kernel with the receiver-sorted segmented reduction;
* ``gaunt[torch]`` / ``gaunt[triton]``: the Gaunt ``grid`` strategy, torch path and fused kernel.

**Correctness on the GPU** (races cannot show under the CPU interpreter): every fused result and
gradient is compared with the torch path of the same backend (max abs difference, relative to the
largest reference entry, recorded), and the deterministic mode is run twice and compared bitwise.

**Bandwidth.** The fused forward must at least read, per edge, the gathered sender features
``C d1``, the edge attributes ``d2``, the weights and two indices, and add ``C d3`` values into the
receiver: ``bytes = E (C d1 + d2 + n_w + C d3) s + 16 E`` for element size ``s``. Achieved bandwidth
= bytes / forward time, reported as a fraction of the card's peak (NVML's memory clock and bus width
when ``pynvml`` is importable, else a table of known cards) and of a measured device-to-device copy.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

import torch

# Peak DRAM bandwidth (bytes/s) of cards NVML may be unable to describe; the name must contain the key.
KNOWN_PEAK_BANDWIDTH = {
    "H200": 4.8e12,
    "H100 SXM": 3.35e12,
    "H100 80GB HBM3": 3.35e12,
    "H100 PCIe": 2.0e12,
    "H100 NVL": 3.9e12,
    "A100-SXM4-80GB": 2.039e12,
    "A100-SXM4-40GB": 1.555e12,
    "A100-PCIE-40GB": 1.555e12,
    "A100 80GB PCIe": 1.935e12,
    "L40S": 0.864e12,
}


def peak_bandwidth(device: torch.device) -> tuple[float | None, str]:
    """Spec peak DRAM bandwidth in bytes/s and where it came from."""
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
    source = torch.empty(megabytes * 2**20 // 4, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    times = []
    for _ in range(10):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        target.copy_(source)
        stop.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(stop) / 1e3)
    return 2 * source.numel() * 4 / statistics.median(times[2:])


def timed(function, device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``function()`` (CUDA events on a GPU, perf_counter otherwise)."""
    import time

    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            function()
            stop.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(stop) / 1e3)
        else:
            begin = time.perf_counter()
            function()
            times.append(time.perf_counter() - begin)
    return statistics.median(times)


def e3nn_convolution(irreps, dtype, device):
    """The e3nn reference: uvu ``o3.TensorProduct`` + gather + index_add."""
    from e3nn import o3

    from equimol.utils.dtype import float64_construction

    irreps_in, irreps_sh, irreps_out = (o3.Irreps(i) for i in irreps)
    instructions = []
    for i1, (_, ir1) in enumerate(irreps_in):
        for i2, (_, ir2) in enumerate(irreps_sh):
            for i3, (_, ir3) in enumerate(irreps_out):
                if ir3 in ir1 * ir2:
                    instructions.append((i1, i2, i3, "uvu", True))
    with float64_construction():
        tp = o3.TensorProduct(
            irreps_in, irreps_sh, irreps_out, instructions, shared_weights=False, internal_weights=False
        )
    tp = tp.to(dtype=dtype, device=device)

    def run(nodes, attrs, weight, src, dst, num_nodes):
        messages = tp(nodes[src], attrs, weight)
        return messages.new_zeros(num_nodes, messages.shape[1]).index_add(0, dst, messages)

    return tp.weight_numel, run


def prefit(args) -> None:
    """Fit and cache the cp factors of every requested ``L`` (CPU; no GPU needed)."""
    import time

    from equimol.bench.tp import benchmark_irreps
    from equimol.tp import TensorProduct

    for lmax in args.lmax:
        start = time.perf_counter()
        tp = TensorProduct(*benchmark_irreps(lmax, args.channels), backend="cp", cp_rank="7L2", dtype=torch.float64)
        print(
            f"L={lmax}: cp rank {tp.rank}, relative error {tp.relative_error:.1e}, {time.perf_counter() - start:.1f} s"
        )


def measure(args) -> dict:
    import os

    device = torch.device(args.device)
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("gpu_kernels.py needs a CUDA GPU (or TRITON_INTERPRET=1 with --device cpu for a dry run)")
    import equimol.kernels  # noqa: F401  (fails clearly if Triton cannot run)

    from equimol.bench.tp import benchmark_irreps
    from equimol.tp import TensorProduct
    from equimol.utils.machine import describe_machine

    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    generator = torch.Generator().manual_seed(0)
    rows = []
    for lmax in args.lmax:
        irreps = benchmark_irreps(lmax, args.channels)
        num_nodes = max(1, args.edges // args.degree)
        src = torch.randint(0, num_nodes, (args.edges,), generator=generator).to(device)
        dst = torch.randint(0, num_nodes, (args.edges,), generator=generator).to(device)
        series = {"e3nn": e3nn_convolution(irreps, dtype, device)}
        modules = {}
        for label, backend, options in [
            ("cp[torch]", "cp", {"cp_rank": "7L2"}),
            ("cp[triton]", "cp", {"cp_rank": "7L2", "kernel": "triton"}),
            ("cp[triton,det]", "cp", {"cp_rank": "7L2", "kernel": "triton", "deterministic": True}),
            ("gaunt[torch]", "gaunt", {"strategy": "grid"}),
            ("gaunt[triton]", "gaunt", {"strategy": "grid", "kernel": "triton"}),
        ]:
            tp = TensorProduct(*irreps, backend=backend, internal_weights=False, dtype=dtype, device=device, **options)
            modules[label] = tp
            series[label] = (tp.weight_numel, tp.message_passing)
        shapes = modules["cp[torch]"]
        d1, d2, d3 = (
            shapes.irreps_in1.dim // args.channels,
            shapes.irreps_in2.dim,
            shapes.irreps_out.dim // args.channels,
        )
        nodes = torch.randn(num_nodes, args.channels * d1, generator=generator, dtype=dtype).to(device)
        attrs = torch.randn(args.edges, d2, generator=generator, dtype=dtype).to(device)
        upstream = torch.randn(num_nodes, args.channels * d3, generator=generator, dtype=dtype).to(device)
        results, outputs = {}, {}
        for label, (weight_numel, run) in series.items():
            weight = torch.randn(args.edges, weight_numel, generator=generator, dtype=dtype).to(device)
            inputs = [t.clone().requires_grad_(True) for t in (nodes, attrs, weight)]

            graph = (src, dst, num_nodes)

            def forward(run=run, inputs=inputs, graph=graph):
                with torch.no_grad():
                    return run(*inputs, *graph)

            def forward_backward(run=run, inputs=inputs, graph=graph, upstream=upstream):
                out = run(*inputs, *graph)
                return torch.autograd.grad(out, inputs, upstream)

            forward_s = timed(forward, device, args.warmup, args.repeats)
            backward_s = timed(forward_backward, device, args.warmup, args.repeats)
            element = torch.finfo(dtype).bits // 8
            moved = args.edges * (args.channels * (d1 + d3) + d2 + weight_numel) * element + 16 * args.edges
            results[label] = {"forward_s": forward_s, "forward_backward_s": backward_s, "min_bytes_forward": moved}
            out = run(*inputs, src, dst, num_nodes)
            outputs[label] = (out.detach(), [g.detach() for g in torch.autograd.grad(out, inputs, upstream)], weight)
        for fused, plain in (
            ("cp[triton]", "cp[torch]"),
            ("cp[triton,det]", "cp[torch]"),
            ("gaunt[triton]", "gaunt[torch]"),
        ):
            # Same weights for the comparison: rerun the torch path with the fused series' weights.
            weight = outputs[fused][2]
            inputs = [t.clone().requires_grad_(True) for t in (nodes, attrs, weight)]
            reference = modules[plain].message_passing(*inputs, src, dst, num_nodes)
            grads = torch.autograd.grad(reference, inputs, upstream)
            reference = reference.detach()
            differences = [(outputs[fused][0] - reference).abs().max() / reference.abs().max()]
            differences += [(a - b).abs().max() / b.abs().max() for a, b in zip(outputs[fused][1], grads)]
            results[fused]["max_relative_difference_vs_torch"] = max(float(d) for d in differences)
        det = modules["cp[triton,det]"]
        weight = outputs["cp[triton,det]"][2]
        with torch.no_grad():
            first, second = (det.message_passing(nodes, attrs, weight, src, dst, num_nodes) for _ in range(2))
        results["cp[triton,det]"]["bitwise_reproducible"] = bool(torch.equal(first, second))
        rows.append(
            {"lmax": lmax, "channels": args.channels, "edges": args.edges, "nodes": num_nodes, "series": results}
        )
        print(
            f"L={lmax}: " + ", ".join(f"{k} {1e3 * v['forward_backward_s']:.2f} ms" for k, v in results.items()),
            file=sys.stderr,
        )
    machine = describe_machine(device)
    record = {"benchmark": "gpu_kernels", "machine": machine, "dtype": args.dtype, "rows": rows}
    if device.type == "cuda":
        peak, source = peak_bandwidth(device)
        copy = copy_bandwidth(device)
        record["bandwidth"] = {"peak_bytes_per_s": peak, "peak_source": source, "copy_bytes_per_s": copy}
        for row in rows:
            for values in row["series"].values():
                achieved = values["min_bytes_forward"] / values["forward_s"]
                values["achieved_bytes_per_s"] = achieved
                values["fraction_of_peak"] = achieved / peak if peak else None
                values["fraction_of_copy"] = achieved / copy
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lmax", type=lambda t: [int(v) for v in t.split(",")], default=[1, 2, 3, 4])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--edges", type=int, default=100_000)
    parser.add_argument("--degree", type=int, default=16, help="edges per node of the random graph")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", help="JSON path (default: benchmarks/gpu_kernels_<gpu>.json)")
    parser.add_argument("--prefit", action="store_true", help="only fit and cache the cp factors (CPU), then exit")
    args = parser.parse_args(argv)
    if args.prefit:
        prefit(args)
        return 0
    record = measure(args)
    name = record["machine"].get("gpu", "cpu-interpreter")
    path = Path(
        args.out or Path(__file__).parent / f"gpu_kernels_{re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_')}.json"
    )
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"{'L':>2} {'series':<16} {'fwd ms':>9} {'fwd+bwd ms':>11} {'of peak':>8} {'vs torch':>9}")
    for row in record["rows"]:
        for label, v in row["series"].items():
            fraction, difference = v.get("fraction_of_peak"), v.get("max_relative_difference_vs_torch")
            fraction = "" if fraction is None else f"{fraction:.1%}"
            difference = "" if difference is None else f"{difference:.1e}"
            print(
                f"{row['lmax']:>2} {label:<16} {1e3 * v['forward_s']:>9.3f} {1e3 * v['forward_backward_s']:>11.3f} "
                f"{fraction:>8} {difference:>9}"
            )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
