r"""Microbenchmark of the tensor-product backends (``equimol bench tp``).

For every grid point ``(L, C, E)`` the benchmark builds, for each chosen backend (or backend
variant, e.g. ``gaunt/grid``), the convolution-shaped product

    ``C x (0e + 1o + ... + Le)``  ⊗  ``0e + 1o + ... + Le``  ->  ``C x (0e + 1o + ... + Le)``

with per-sample weights, then times ``forward`` and ``forward + backward`` (gradients of all
three inputs) on ``E`` samples. Backends are interleaved repeat by repeat inside one process so
that drifting machine load affects them alike; medians are reported.

Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU. On a CPU, where torch has no
allocator statistics, it is the bytes of tensors saved for backward plus the output (the
activation memory a training step holds), measured with saved-tensor hooks.

With ``kernels`` (``equimol bench tp --kernel torch,triton``) every series is timed once per
message-passing implementation (labels ``backend[kernel]``), and the timed operation becomes the
whole convolution ``tp.message_passing``: gather from ``E / MESSAGE_DEGREE`` nodes, product, and
scatter-sum into random receivers (gradients of node features, edge attributes and weights).

The scaling exponent in ``L`` is the least-squares slope of ``log(time)`` against ``log(L)``
over the measured ``L`` (for each backend, ``C`` and ``E``).

A backend with several variants (``gaunt/grid``, ``gaunt/edge``) is summarized by its
best variant at each grid point (least forward+backward time, :func:`best_per_backend`), with its
ratios to the first series, in wall time and in process CPU time (medians of both are recorded; on a
shared machine CPU time leaves out the slices the OS gave to other jobs, which at small L can be
longer than the product itself). ``first_call_s`` is the first untimed forward plus forward+backward
(the compilation of a compiled variant such as ``gaunt/compiled``); a variant that cannot serve a
grid point (``gaunt/compiled`` beyond its entry limit) is listed under ``skipped`` with the reason.
The record names the torch thread count and the 1-minute load average
before and after the run (the machine may be shared; ratios within one run stay comparable).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from equimol.errors import EquimolInputError
from equimol.microbench.variants import BENCHMARK_VARIANTS
from equimol.tp import TensorProduct, TensorProductBackend, get_backend
from equimol.utils.dtype import resolve_dtype
from equimol.utils.machine import describe_machine

#: Edges per node of the random graph timed in message-passing mode (a typical MLIP neighbor count).
MESSAGE_DEGREE = 16


@dataclass(frozen=True)
class Series:
    """One timed line: a backend with fixed options, labelled ``backend`` or ``backend/variant``."""

    label: str
    backend: str
    options: dict = field(default_factory=dict)


@dataclass
class Measurement:
    """The result of one series at one grid point (times in seconds, memory in bytes)."""

    label: str
    backend: str
    lmax: int
    channels: int
    edges: int
    forward_s: float
    forward_backward_s: float
    peak_memory_bytes: int
    setup_s: float
    weight_numel: int
    forward_all_s: list[float]
    forward_backward_all_s: list[float]
    forward_cpu_s: float = math.nan
    forward_backward_cpu_s: float = math.nan
    first_call_s: float = math.nan


def parse_series(spec: str | Sequence[str]) -> list[Series]:
    """Parse ``"cg,gaunt/grid,cp"`` into series.

    A plain backend name with variants (:data:`~equimol.microbench.variants.BENCHMARK_VARIANTS`) expands
    into one series per variant (``gaunt`` -> ``gaunt/grid``, ``gaunt/edge``, ``gaunt/compiled``);
    ``name/variant`` picks one.
    """
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise EquimolInputError("--backends is empty; give e.g. 'cg,gaunt'")
    series: list[Series] = []
    for name in names:
        backend, _, variant = name.partition("/")
        get_backend(backend)  # an unknown name is an error naming the known backends
        variants = BENCHMARK_VARIANTS.get(backend, {})
        if variant:
            if variant not in variants:
                raise EquimolInputError(
                    f"backend {backend!r} has no benchmark variant {variant!r}; known: {sorted(variants) or 'none'}"
                )
            series.append(Series(name, backend, dict(variants[variant])))
        elif variants:
            series.extend(Series(f"{backend}/{key}", backend, dict(opts)) for key, opts in variants.items())
        else:
            series.append(Series(backend, backend, {}))
    return series


def benchmark_irreps(lmax: int, channels: int) -> tuple[str, str, str]:
    """The convolution-shaped irreps used at degree ``lmax`` with ``channels`` channels."""
    degrees = [f"{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lmax + 1)]
    features = " + ".join(f"{channels}x{d}" for d in degrees)
    return features, " + ".join(degrees), features


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call of ``function``, the device synchronized before and after (GPU work included)."""
    _synchronize(device)
    start = time.perf_counter()
    function()
    _synchronize(device)
    return time.perf_counter() - start


def _timed_with_cpu(function: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Wall and process CPU seconds of one call (CPU time leaves out the time the OS ran other jobs)."""
    cpu = time.process_time()
    wall = timed(function, device)
    return wall, time.process_time() - cpu


def _activation_bytes(function: Callable[[], torch.Tensor]) -> int:
    """Bytes saved for backward plus the output, counting each storage once."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = function()
    storage = output.untyped_storage()
    storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def _peak_memory(function: Callable[[], object], device: torch.device, forward: Callable[[], torch.Tensor]) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        function()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - baseline)
    return _activation_bytes(forward)


def benchmark_point(
    series: Sequence[Series],
    lmax: int,
    channels: int,
    edges: int,
    *,
    device: torch.device,
    dtype: torch.dtype,
    warmup: int,
    repeats: int,
    seed: int = 0,
    skipped: list[dict] | None = None,
) -> list[Measurement]:
    """Time every series at one grid point, interleaved; see the module docstring.

    A variant whose options cannot serve this point (its constructor raises ValueError) is left
    out, with the reason appended to ``skipped``; the time of each series' first forward and
    forward+backward (compilation included, for compiled variants) is ``first_call_s``.
    """
    irreps = benchmark_irreps(lmax, channels)
    generator = torch.Generator().manual_seed(seed)
    modules: list[TensorProductBackend] = []
    setup_times = []
    served = []
    for item in series:
        start = time.perf_counter()
        try:
            module = TensorProduct(
                *irreps, backend=item.backend, internal_weights=False, dtype=dtype, device=device, **item.options
            )
        except ValueError as error:
            if item.label == item.backend:  # a plain backend that cannot serve the point: the user's error
                raise
            # A variant may serve only part of the grid (gaunt/compiled up to its entry limit).
            if skipped is not None:
                skipped.append({"label": item.label, "lmax": lmax, "reason": str(error)})
            continue
        modules.append(module)
        served.append(item)
        setup_times.append(time.perf_counter() - start)
    series = served
    dims = modules[0].irreps_in1.dim, modules[0].irreps_in2.dim
    message_mode = any("kernel" in item.options for item in series)
    rows = max(1, edges // MESSAGE_DEGREE) if message_mode else edges
    x1 = torch.randn(rows, dims[0], generator=generator, dtype=dtype).to(device).requires_grad_(True)
    x2 = torch.randn(edges, dims[1], generator=generator, dtype=dtype).to(device).requires_grad_(True)
    weights = [
        torch.randn(edges, m.weight_numel, generator=generator, dtype=dtype).to(device).requires_grad_(True)
        for m in modules
    ]
    grad_out = torch.randn(rows, modules[0].irreps_out.dim, generator=generator, dtype=dtype).to(device)
    senders = torch.randint(0, rows, (edges,), generator=generator).to(device)
    receivers = torch.randint(0, rows, (edges,), generator=generator).to(device)

    def forward_of(index: int) -> Callable[[], torch.Tensor]:
        if message_mode:
            return lambda: modules[index].message_passing(x1, x2, weights[index], senders, receivers, rows)
        return lambda: modules[index](x1, x2, weights[index])

    def forward_backward_of(index: int) -> Callable[[], object]:
        def run():
            out = forward_of(index)()
            return torch.autograd.grad(out, (x1, x2, weights[index]), grad_out)

        return run

    forward_times: list[list[float]] = [[] for _ in series]
    backward_times: list[list[float]] = [[] for _ in series]
    cpu_times: list[tuple[list[float], list[float]]] = [([], []) for _ in series]
    first_calls = [math.nan for _ in series]
    for repeat in range(warmup + repeats):
        for index in range(len(series)):
            with torch.no_grad():
                elapsed_forward, cpu_forward = _timed_with_cpu(forward_of(index), device)
            elapsed_backward, cpu_backward = _timed_with_cpu(forward_backward_of(index), device)
            if repeat == 0:
                first_calls[index] = elapsed_forward + elapsed_backward
            if repeat >= warmup:
                forward_times[index].append(elapsed_forward)
                backward_times[index].append(elapsed_backward)
                cpu_times[index][0].append(cpu_forward)
                cpu_times[index][1].append(cpu_backward)
    results = []
    for index, item in enumerate(series):
        peak = _peak_memory(forward_backward_of(index), device, forward_of(index))
        results.append(
            Measurement(
                label=item.label,
                backend=item.backend,
                lmax=lmax,
                channels=channels,
                edges=edges,
                forward_s=statistics.median(forward_times[index]),
                forward_backward_s=statistics.median(backward_times[index]),
                peak_memory_bytes=peak,
                setup_s=setup_times[index],
                weight_numel=modules[index].weight_numel,
                forward_all_s=forward_times[index],
                forward_backward_all_s=backward_times[index],
                forward_cpu_s=statistics.median(cpu_times[index][0]),
                forward_backward_cpu_s=statistics.median(cpu_times[index][1]),
                first_call_s=first_calls[index],
            )
        )
    return results


def scaling_exponents(measurements: Sequence[Measurement]) -> list[dict]:
    """Least-squares slope of log(time) in log(L), per (label, channels, edges), for both timings."""
    groups: dict[tuple[str, int, int], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.label, m.channels, m.edges), []).append(m)
    fits = []
    for (label, channels, edges), group in groups.items():
        if len({m.lmax for m in group}) < 2:
            continue
        fit = {"label": label, "channels": channels, "edges": edges}
        for key in ("forward_s", "forward_backward_s"):
            xs = [math.log(m.lmax) for m in group]
            ys = [math.log(getattr(m, key)) for m in group]
            x_mean, y_mean = statistics.fmean(xs), statistics.fmean(ys)
            slope = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys)) / sum((x - x_mean) ** 2 for x in xs)
            fit[key.replace("_s", "_exponent")] = slope
        fits.append(fit)
    return fits


def best_per_backend(measurements: Sequence[dict]) -> list[dict]:
    """For each grid point and backend, its fastest series (forward+backward) and ratios to the first series.

    ``measurements`` are the JSON dicts of :class:`Measurement` in run order; the first label is the baseline.
    """
    if not measurements:
        return []
    baseline_label = measurements[0]["label"]
    points: dict[tuple[int, int, int], list[dict]] = {}
    for m in measurements:
        points.setdefault((m["lmax"], m["channels"], m["edges"]), []).append(m)
    best = []
    for (lmax, channels, edges), rows in points.items():
        baseline = next(m for m in rows if m["label"] == baseline_label)
        winners: dict[str, dict] = {}
        for m in rows:
            if m["backend"] not in winners or m["forward_backward_s"] < winners[m["backend"]]["forward_backward_s"]:
                winners[m["backend"]] = m
        for backend, m in winners.items():
            best.append(
                {
                    "backend": backend,
                    "label": m["label"],
                    "lmax": lmax,
                    "channels": channels,
                    "edges": edges,
                    "forward_s": m["forward_s"],
                    "forward_backward_s": m["forward_backward_s"],
                    "forward_ratio": m["forward_s"] / baseline["forward_s"],
                    "forward_backward_ratio": m["forward_backward_s"] / baseline["forward_backward_s"],
                    "forward_cpu_ratio": m.get("forward_cpu_s", math.nan) / baseline.get("forward_cpu_s", math.nan),
                    "forward_backward_cpu_ratio": m.get("forward_backward_cpu_s", math.nan)
                    / baseline.get("forward_backward_cpu_s", math.nan),
                }
            )
    return best


def report_points(progress: Callable[[str], None] | None, where: str, points: Sequence, seconds: str, digits: int):
    """Hand ``progress`` one line: ``where``, then each point's label and its ``seconds`` attribute in ms."""
    if progress:
        progress(f"{where}: " + ", ".join(f"{m.label} {1e3 * getattr(m, seconds):.{digits}f} ms" for m in points))


def run_benchmark(
    backends: str | Sequence[str],
    lmax_values: Sequence[int],
    channels_values: Sequence[int],
    edges_values: Sequence[int],
    *,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    warmup: int = 2,
    repeats: int = 5,
    progress: Callable[[str], None] | None = None,
    kernels: Sequence[str] | None = None,
) -> dict:
    """Run the whole grid and return a JSON-ready record (machine, settings, measurements, fits).

    ``kernels`` (e.g. ``["torch", "triton"]``) times each series per message-passing kernel, on the
    whole convolution (see the module docstring); None times the bare product.
    """
    if min(lmax_values) < 1:
        raise EquimolInputError(f"--lmax values must be >= 1, got {list(lmax_values)}")
    torch_device = torch.device(device)
    torch_dtype = resolve_dtype(dtype)
    series = parse_series(backends)
    if kernels:
        series = [
            Series(f"{item.label}[{kernel}]", item.backend, {**item.options, "kernel": kernel})
            for item in series
            for kernel in kernels
        ]
    measurements: list[Measurement] = []
    skipped: list[dict] = []
    load_before = os.getloadavg()[0]
    for lmax in lmax_values:
        for channels in channels_values:
            for edges in edges_values:
                timing = {"device": torch_device, "dtype": torch_dtype, "warmup": warmup, "repeats": repeats}
                points = benchmark_point(series, lmax, channels, edges, **timing, skipped=skipped)
                measurements.extend(points)
                report_points(progress, f"L={lmax} C={channels} E={edges}", points, "forward_backward_s", 2)
    rows = [asdict(m) for m in measurements]
    return {
        "benchmark": "tp",
        "machine": describe_machine(torch_device),
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "settings": {
            "threads": torch.get_num_threads(),
            "backends": [asdict(s) for s in series],
            "lmax": list(lmax_values),
            "channels": list(channels_values),
            "edges": list(edges_values),
            "dtype": str(torch_dtype).removeprefix("torch."),
            "warmup": warmup,
            "repeats": repeats,
            "memory": "cuda max_memory_allocated" if torch_device.type == "cuda" else "saved-for-backward + output",
            "operation": f"message_passing (E / {MESSAGE_DEGREE} nodes)" if kernels else "product",
        },
        "measurements": rows,
        "skipped": skipped,
        "best": best_per_backend(rows),
        "exponents": scaling_exponents(measurements),
    }
