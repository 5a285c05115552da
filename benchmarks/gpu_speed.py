"""Speed sections of ``benchmarks/gpu_kernels.py``: convolution, model energy+forces, training steps.

**Convolution** ``m_i = sum_{e: j -> i} TP(x_j, Y(r_e), w_e)`` with ``C x (0e + 1o + ... + L)``
features, ``0e + ... + L`` edge attributes and per-edge weights, timed forward and forward+backward
(gradients of node features, edge attributes and weights, as forces need) for:

* ``e3nn``: ``o3.TensorProduct`` (uvu) + gather + ``index_add`` (e3nn with scatter);
* ``<backend>[torch]``: every registered equimol backend's torch path (``cg`` is e3nn inside);
* ``<backend>[triton]`` / ``<backend>[triton,det]``: the fused kernel where the backend accepts it;
* ``cueq``: the ``cueq`` backend, cuEquivariance's indexed (fused gather/scatter) call, recording the
  method it ran (``uniform_1d`` = CUDA kernel, ``naive`` = PyTorch fallback);
* ``oeq``: OpenEquivariance ``TensorProductConv`` (atomics) when importable, else skipped with the reason.

At ``L`` in ``--lmax-factored`` (default 6) only the ``gaunt`` and ``cp`` series run. Each series is
checked against e3nn (max relative difference of the forward output) where it computes the same
product (``cg``, ``cueq``, ``oeq``); ``gaunt`` and ``cp`` are different products, checked against their
torch path in the correctness section.

**Bandwidth**: the minimum bytes a forward must move, ``E (C d1 + d2 + n_w + C d3) s + 16 E``
(gathered senders, edge attributes, weights, two indices, the scattered output), divided by the
forward time, as a fraction of the card's peak and of a measured device-to-device copy.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from equimol.microbench.tp import benchmark_irreps
from equimol.microbench.tp import timed as single_call
from equimol.tp import TensorProduct, available_backends

FACTORED_ONLY = ("gaunt", "cp")


def timed(function: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``function()`` after ``warmup`` calls, the device synchronized around each call."""
    for _ in range(warmup):
        function()
    return statistics.median(single_call(function, device) for _ in range(repeats))


def e3nn_convolution(irreps, dtype: torch.dtype, device: torch.device):
    """e3nn with scatter: uvu ``o3.TensorProduct`` on gathered senders, then ``index_add``."""
    from e3nn import o3

    from equimol.utils.dtype import float64_construction

    irreps_in, irreps_sh, irreps_out = (o3.Irreps(i) for i in irreps)
    instructions = [
        (i1, i2, i3, "uvu", True)
        for i3, (_, ir3) in enumerate(irreps_out)
        for i1, (_, ir1) in enumerate(irreps_in)
        for i2, (_, ir2) in enumerate(irreps_sh)
        if ir3 in ir1 * ir2
    ]
    with float64_construction():
        tp = o3.TensorProduct(
            irreps_in,
            irreps_sh,
            irreps_out,
            instructions,
            irrep_normalization="component",
            path_normalization="element",
            shared_weights=False,
            internal_weights=False,
        )
    tp = tp.to(dtype=dtype, device=device)

    def run(nodes, attrs, weight, src, dst, num_nodes):
        messages = tp(nodes[src], attrs, weight)
        return messages.new_zeros(num_nodes, messages.shape[1]).index_add(0, dst, messages)

    return tp.weight_numel, run, instructions


def oeq_convolution(irreps, instructions, dtype: torch.dtype, device: torch.device):
    """OpenEquivariance's fused convolution (atomics), e3nn's weight layout; raises if unavailable."""
    import openequivariance as oeq
    from e3nn import o3

    numpy_dtype = {torch.float32: __import__("numpy").float32, torch.float64: __import__("numpy").float64}[dtype]
    problem = oeq.TPProblem(
        *(o3.Irreps(i) for i in irreps),
        instructions,
        shared_weights=False,
        internal_weights=False,
        irrep_dtype=numpy_dtype,
        weight_dtype=numpy_dtype,
    )
    conv = oeq.TensorProductConv(problem, torch_op=True, deterministic=False)

    def run(nodes, attrs, weight, src, dst, num_nodes):
        # OpenEquivariance sums over "cols" (senders) into "rows" (receivers).
        return conv.forward(nodes, attrs, weight, dst, src)

    return problem.weight_numel, run


def convolution_series(irreps, lmax: int, lmax_factored: list[int], dtype, device) -> tuple[dict, dict]:
    """``label -> (weight_numel, run)`` for every series at this ``L``, and ``label -> skip reason``."""
    series, skipped = {}, {}
    factored_only = lmax in lmax_factored
    if not factored_only:
        weight_numel, run, instructions = e3nn_convolution(irreps, dtype, device)
        series["e3nn"] = (weight_numel, run)
        try:
            series["oeq"] = oeq_convolution(irreps, instructions, dtype, device)
        except Exception as error:  # noqa: BLE001 - not installed, no CUDA, or a build failure: record why
            skipped["oeq"] = f"{type(error).__name__}: {error}"
    for backend in available_backends():
        if factored_only and backend not in FACTORED_ONLY:
            continue
        options = {"backend": backend, "internal_weights": False, "dtype": dtype, "device": device}
        if backend == "cp":
            options["cp_rank"] = "7L2"
        if backend == "gaunt":
            options["strategy"] = "grid"
        variants = {
            "torch": {},
            "triton": {"kernel": "triton"},
            "triton,det": {"kernel": "triton", "deterministic": True},
        }
        if backend == "cueq":
            variants = {"cueq": {}}
        for name, extra in variants.items():
            label = backend if name == backend else f"{backend}[{name}]"
            try:
                tp = TensorProduct(*irreps, **options, **extra)
            except (ValueError, ImportError, RuntimeError) as error:
                skipped[label] = f"{type(error).__name__}: {error}"
                continue
            series[label] = (tp.weight_numel, tp.message_passing)
            if backend == "cueq":
                skipped.setdefault("cueq_method", tp.method)
    return series, skipped


def convolution_speed(
    device: torch.device,
    lmax_list: list[int],
    lmax_factored: list[int],
    channels: int,
    edges: int,
    degree: int,
    dtype: torch.dtype,
    warmup: int,
    repeats: int,
    deadline: float,
    log: Callable[[str], None],
) -> list[dict]:
    """One row per ``L``: every series' forward and forward+backward seconds (module docstring)."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for lmax in [*lmax_list, *lmax_factored]:
        if time.monotonic() > deadline:
            rows.append({"lmax": lmax, "skipped": "time budget spent"})
            continue
        irreps = benchmark_irreps(lmax, channels)
        num_nodes = max(1, edges // degree)
        src = torch.randint(0, num_nodes, (edges,), generator=generator).to(device)
        dst = torch.randint(0, num_nodes, (edges,), generator=generator).to(device)
        series, skipped = convolution_series(irreps, lmax, lmax_factored, dtype, device)
        d1 = sum(2 * l + 1 for l in range(lmax + 1))
        nodes = torch.randn(num_nodes, channels * d1, generator=generator, dtype=dtype).to(device)
        attrs = torch.randn(edges, d1, generator=generator, dtype=dtype).to(device)
        upstream = torch.randn(num_nodes, channels * d1, generator=generator, dtype=dtype).to(device)
        results, reference = {}, None
        for label, (weight_numel, run) in series.items():
            weight_generator = torch.Generator().manual_seed(lmax)  # same weights for same-layout series
            weight = torch.randn(edges, weight_numel, generator=weight_generator, dtype=dtype).to(device)
            inputs = [t.clone().requires_grad_(True) for t in (nodes, attrs, weight)]

            graph = (src, dst, num_nodes)

            def forward(run=run, inputs=inputs, graph=graph):
                with torch.no_grad():
                    return run(*inputs, *graph)

            def forward_backward(run=run, inputs=inputs, graph=graph, upstream=upstream):
                return torch.autograd.grad(run(*inputs, *graph), inputs, upstream)

            try:
                start = time.perf_counter()
                output = forward()
                first_call = time.perf_counter() - start  # includes compilation / autotuning
                forward_s = timed(forward, device, warmup, repeats)
                forward_backward_s = timed(forward_backward, device, warmup, repeats)
            except Exception as error:  # noqa: BLE001 - record a failing series and go on with the others
                skipped[label] = f"{type(error).__name__}: {error}"
                continue
            element = torch.finfo(dtype).bits // 8
            moved = edges * (channels * 2 * d1 + d1 + weight_numel) * element + 16 * edges
            results[label] = {
                "forward_s": forward_s,
                "forward_backward_s": forward_backward_s,
                "first_call_s": first_call,
                "min_bytes_forward": moved,
            }
            if label == "e3nn":
                reference = output
            elif reference is not None and (label.startswith(("cg", "cueq")) or label == "oeq"):
                scale = reference.abs().max().item()
                results[label]["max_relative_difference_vs_e3nn"] = (output - reference).abs().max().item() / scale
        row = {"lmax": lmax, "channels": channels, "edges": edges, "nodes": num_nodes, "series": results}
        row["skipped_series"] = skipped
        rows.append(row)
        log(f"L={lmax}: " + ", ".join(f"{k} {1e3 * v['forward_backward_s']:.2f} ms" for k, v in results.items()))
    return rows


def add_bandwidth(rows: list[dict], peak: float | None, copy: float | None) -> None:
    """Achieved bytes/s and fractions of the peak and of a measured copy, in place."""
    for row in rows:
        for values in row.get("series", {}).values():
            achieved = values["min_bytes_forward"] / values["forward_s"]
            values["achieved_bytes_per_s"] = achieved
            values["fraction_of_peak"] = achieved / peak if peak else None
            values["fraction_of_copy"] = achieved / copy if copy else None
