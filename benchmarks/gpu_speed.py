"""Speed sections of ``benchmarks/gpu_kernels.py`` (each takes its :class:`gpu_kernels.Context`; a size or
series that fails, out of memory say, is recorded with its error; no new size starts after the deadline).

**Convolution** (:func:`convolution`) ``m_i = sum_{e: j -> i} TP(x_j, Y(r_e), w_e)`` with
``C x (0e + 1o + ... + L)`` features, ``0e + ... + L`` edge attributes and per-edge weights, timed forward
and forward+backward (gradients of node features, edge attributes and weights, as forces need) for:

* ``e3nn``: e3nn's ``o3.TensorProduct`` (uvu) on the gathered senders + ``index_add`` (the ``cg``
  backend's ``e3nn`` strategy, without equimol's input checks);
* ``<backend>[torch]``: every registered equimol backend's torch path (``cg``: its ``edge`` strategy);
* ``<backend>[triton]`` / ``<backend>[triton,det]``: the fused kernel where the backend accepts it;
* ``cueq``: the ``cueq`` backend, cuEquivariance's indexed (fused gather/scatter) call, recording the
  method it ran (``uniform_1d`` = CUDA kernel, ``naive`` = PyTorch fallback);
* ``oeq``: OpenEquivariance ``TensorProductConv`` (atomics) when importable, else skipped with the reason.

At ``L`` in ``sizes["lmax_factored"]`` only the factored backends (``gaunt``, ``cp``) run. Series that
compute e3nn's product (``cg``, ``cueq``, ``oeq``) get its weights and record their forward's max relative
difference to it.
**Bandwidth** (:func:`add_bandwidth`): the minimum bytes a forward moves, ``E (C d1 + d2 + n_w + C d3) s +
16 E`` (gathered senders, edge attributes, weights, two indices, scattered output), over the forward time,
as a fraction of the card's peak and of a measured device-to-device copy.

**Training** (:func:`training`): optimizer steps per second on 3BPA (``configs/3bpa_quick.yaml``'s
model, batches of 5 molecules of ``train_300K.xyz``, Adam, loss ``MSE(E) + 100 MSE(F)`` with forces by
double backward), per backend and kernel.

**Model** (:func:`model_scaling`): ``equimol bench model``'s model (2 layers, ``C x (0e + ... + L)``,
cutoff 5 Å, eval mode) on liquid-density water boxes of about 1k, 10k and 100k atoms, every backend and
kernel; :func:`mace` times MACE on the same boxes in ``gpu_mace.py``, a subprocess with its own Python
path (mace-torch pins e3nn 0.4.4, equimol needs e3nn >= 0.5).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import ase.io
import torch
from _common import ROOT, quick_3bpa_model
from gpu_checks import kernels_for, relative_difference
from torch_geometric.data import Batch

from equimol.graph import atoms_to_graph
from equimol.microbench.model import benchmark_structure, water_box
from equimol.microbench.tp import Series, benchmark_irreps
from equimol.microbench.tp import timed as single_call
from equimol.models import build_model
from equimol.tp import TensorProduct, available_backends, factored_backends

#: Peak DRAM bandwidth (bytes/s) of cards NVML may be unable to describe; the name must contain the key.
KNOWN_PEAK_BANDWIDTH = {
    "H200": 4.8e12, "H100 SXM": 3.35e12, "H100 80GB HBM3": 3.35e12, "H100 PCIe": 2.0e12, "H100 NVL": 3.9e12,
    "A100-SXM4-80GB": 2.039e12, "A100-SXM4-40GB": 1.555e12, "A100 80GB PCIe": 1.935e12, "L40S": 0.864e12,
}  # fmt: skip
#: Backend options of the convolution series (the rank and strategy the issue's comparison names).
CONVOLUTION_OPTIONS = {"cp": {"cp_rank": "7L2"}, "gaunt": {"strategy": "grid"}}
#: The message-passing variants timed for every backend but ``cueq`` (label suffix -> options).
KERNEL_VARIANTS = {"torch": {}, "triton": {"kernel": "triton"},
                   "triton,det": {"kernel": "triton", "deterministic": True}}  # fmt: skip


def timed(function, device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``function()`` after ``warmup`` calls, the device synchronized around each call."""
    for _ in range(warmup):
        function()
    return statistics.median(single_call(function, device) for _ in range(repeats))


def oeq_convolution(e3nn_tp, dtype: torch.dtype):
    """OpenEquivariance's fused convolution (atomics) with ``e3nn_tp``'s paths and weight layout."""
    import numpy as np
    import openequivariance as oeq

    numpy_dtype = {torch.float32: np.float32, torch.float64: np.float64}[dtype]
    instructions = [(p.i1, p.i2, p.i_out, "uvu", True) for p in e3nn_tp.paths]
    irreps = (e3nn_tp.irreps_in1, e3nn_tp.irreps_in2, e3nn_tp.irreps_out)
    weights = {"shared_weights": False, "internal_weights": False}
    problem = oeq.TPProblem(*irreps, instructions, **weights, irrep_dtype=numpy_dtype, weight_dtype=numpy_dtype)
    conv = oeq.TensorProductConv(problem, torch_op=True, deterministic=False)
    # OpenEquivariance sums over "cols" (senders) into "rows" (receivers).
    run = lambda nodes, attrs, weight, src, dst, num_nodes: conv.forward(nodes, attrs, weight, dst, src)  # noqa: E731
    return SimpleNamespace(weight_numel=problem.weight_numel, message_passing=run)


def convolution_series(irreps, factored_only: bool, dtype, device) -> tuple[dict, dict]:
    """``label -> module with weight_numel and message_passing`` for every series, and ``label -> skip reason``."""
    series, skipped = {}, {}

    def add(label: str, build) -> None:
        try:
            series[label] = build()
        except Exception as error:  # noqa: BLE001 - not installed, no CUDA, or a build failure: record why
            skipped[label] = f"{type(error).__name__}: {error}"

    options = {"internal_weights": False, "dtype": dtype, "device": device}
    build = lambda backend, extra: TensorProduct(*irreps, backend=backend, **options, **extra)  # noqa: E731
    if not factored_only:
        e3nn = build("cg", {"strategy": "e3nn"})
        series["e3nn"] = SimpleNamespace(weight_numel=e3nn.weight_numel, message_passing=e3nn.reference_message_passing)
        add("oeq", lambda: oeq_convolution(e3nn, dtype))
    for backend in available_backends():
        if factored_only and backend not in factored_backends():
            continue
        for name, extra in ({"cueq": {}} if backend == "cueq" else KERNEL_VARIANTS).items():
            label = backend if name == backend else f"{backend}[{name}]"
            add(label, lambda: build(backend, CONVOLUTION_OPTIONS.get(backend, {}) | extra))  # noqa: B023
            if label == "cueq" and label in series:
                skipped.setdefault("cueq_method", series[label].method)
    return series, skipped


def convolution(context) -> list[dict]:
    """One row per ``L``: every series' forward and forward+backward seconds (module docstring)."""
    sizes, device, dtype = context.sizes, context.device, context.dtype
    channels, edges = sizes["channels"], sizes["edges"]
    generator = torch.Generator().manual_seed(0)
    rows = []
    for lmax in [*sizes["lmax"], *sizes["lmax_factored"]]:
        if context.out_of_time():
            rows.append({"lmax": lmax, "skipped": "time budget spent"})
            continue
        num_nodes = max(1, edges // sizes["degree"])
        src, dst = (torch.randint(0, num_nodes, (edges,), generator=generator).to(device) for _ in range(2))
        irreps = benchmark_irreps(lmax, channels)
        series, skipped = convolution_series(irreps, lmax in sizes["lmax_factored"], dtype, device)
        d1 = sum(2 * l + 1 for l in range(lmax + 1))
        nodes = torch.randn(num_nodes, channels * d1, generator=generator, dtype=dtype).to(device)
        attrs = torch.randn(edges, d1, generator=generator, dtype=dtype).to(device)
        upstream = torch.randn(num_nodes, channels * d1, generator=generator, dtype=dtype).to(device)
        results, reference = {}, None
        for label, module in series.items():
            weight_generator = torch.Generator().manual_seed(lmax)  # same weights for same-layout series
            weight = torch.randn(edges, module.weight_numel, generator=weight_generator, dtype=dtype).to(device)
            inputs = [t.clone().requires_grad_(True) for t in (nodes, attrs, weight)]

            def forward(run=module.message_passing, inputs=inputs):
                with torch.no_grad():
                    return run(*inputs, src, dst, num_nodes)  # noqa: B023 - called in this iteration only

            def forward_backward(run=module.message_passing, inputs=inputs):
                return torch.autograd.grad(run(*inputs, src, dst, num_nodes), inputs, upstream)  # noqa: B023

            try:
                start = time.perf_counter()
                output = forward()
                first_call = time.perf_counter() - start  # includes compilation / autotuning
                forward_s = timed(forward, device, sizes["warmup"], sizes["repeats"])
                forward_backward_s = timed(forward_backward, device, sizes["warmup"], sizes["repeats"])
            except Exception as error:  # noqa: BLE001 - record a failing series and go on with the others
                skipped[label] = f"{type(error).__name__}: {error}"
                continue
            moved = edges * (channels * 2 * d1 + d1 + module.weight_numel) * (torch.finfo(dtype).bits // 8) + 16 * edges
            results[label] = {"forward_s": forward_s, "forward_backward_s": forward_backward_s,
                              "first_call_s": first_call, "min_bytes_forward": moved}  # fmt: skip
            if label == "e3nn":
                reference = output
            elif reference is not None and (label.startswith(("cg", "cueq")) or label == "oeq"):
                results[label]["max_relative_difference_vs_e3nn"] = relative_difference(output, reference)
        rows.append({"lmax": lmax, "channels": channels, "edges": edges, "nodes": num_nodes, "series": results,
                     "skipped_series": skipped})  # fmt: skip
        context.log(f"L={lmax}: " + ", ".join(f"{k} {1e3 * v['forward_backward_s']:.2f} ms"
                                              for k, v in results.items()))  # fmt: skip
    return rows


def add_bandwidth(rows: list[dict], device: torch.device, megabytes: int = 1024) -> dict:
    """Add each series' achieved bytes/s and its fractions of the card's spec peak DRAM bandwidth (NVML, else
    ``KNOWN_PEAK_BANDWIDTH``) and of a measured device-to-device copy (read + write counted) to ``rows``;
    returns the peak, where it came from, and the copy's bytes/s."""
    source = torch.empty(megabytes * 2**20 // 4, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    copy = 2 * source.numel() * 4 / timed(lambda: target.copy_(source), device, warmup=2, repeats=8)
    name = torch.cuda.get_device_name(device)
    key = next((key for key in KNOWN_PEAK_BANDWIDTH if key in name), None)
    peak, origin = KNOWN_PEAK_BANDWIDTH.get(key), f"table entry {key!r} (vendor specification)"
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        clock_mhz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
        bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
        peak = 2.0 * clock_mhz * 1e6 * bus_bits / 8.0
        origin = f"NVML: {clock_mhz} MHz x {bus_bits} bit, double data rate"
    except Exception:  # noqa: BLE001 - NVML missing or unsupported: the table's value
        origin = origin if key else f"unknown card {name!r}"
    for row in rows:
        for values in row.get("series", {}).values():
            achieved = values["min_bytes_forward"] / values["forward_s"]
            values["achieved_bytes_per_s"] = achieved
            values["fraction_of_peak"] = achieved / peak if peak else None
            values["fraction_of_copy"] = achieved / copy
    return {"peak_bytes_per_s": peak, "peak_source": origin, "copy_bytes_per_s": copy}


def model_scaling(context) -> list[dict]:
    """Energy+forces seconds per water box and ``backend[kernel]`` (see the module docstring)."""
    sizes, device = context.sizes, context.device
    rows = []
    for lattice in sizes["lattices"]:
        atoms = water_box(lattice)
        if context.out_of_time():
            rows.append({"atoms": len(atoms), "skipped": "time budget spent"})
            continue
        for backend in available_backends():
            for kernel in kernels_for(backend, device):
                try:
                    (point,) = benchmark_structure(
                        [(Series(backend, backend, {}), kernel)], "water", atoms, channels=sizes["scaling_channels"],
                        lmax=2, radial_cutoff=5.0, device=device, dtype=context.dtype, warmup=1,
                        repeats=sizes["model_repeats"],
                    )  # fmt: skip
                    row = asdict(point)
                    row.pop("all_s", None)
                except Exception as error:  # noqa: BLE001 - out of memory at 100k atoms, say: record and go on
                    row = {"label": f"{backend}[{kernel}]", "atoms": len(atoms), "error": repr(error)[:300]}
                rows.append(row)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        timed_rows = [f"{r['label']} {1e3 * r['energy_forces_s']:.1f} ms" for r in rows if "energy_forces_s" in r]
        context.log(f"model E+F, {len(atoms)} atoms: " + ", ".join(timed_rows[-8:]))
    return rows


def mace(context) -> dict:
    """``benchmarks/gpu_mace.py`` on the water boxes, in a subprocess; its JSON record, or why it gave none."""
    pythonpath = context.args.mace_pythonpath
    environment = dict(os.environ) | ({"PYTHONPATH": pythonpath} if pythonpath else {})
    with tempfile.TemporaryDirectory() as folder:
        boxes = Path(folder) / "water_boxes.extxyz"
        ase.io.write(boxes, [water_box(lattice) for lattice in context.sizes["lattices"]])
        command = [context.args.mace_python, str(ROOT / "benchmarks" / "gpu_mace.py"), str(boxes), "--device",
                   str(context.device), "--channels", str(context.sizes["scaling_channels"]), "--lmax", "2",
                   "--dtype", str(context.dtype).removeprefix("torch.")]  # fmt: skip
        timeout = context.sizes["mace_timeout_s"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)
        except (OSError, subprocess.TimeoutExpired) as error:
            return {"skipped": f"{type(error).__name__}: {error}"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"skipped": f"gpu_mace.py exited {done.returncode}: {done.stderr.strip()[-600:]}"}
    return json.loads(lines[-1])


def training(context) -> list[dict]:
    """Optimizer steps per second on 3BPA for every backend and kernel, float64 (see the module docstring).

    ``sizes["train_atoms_per_frame"]`` keeps only the first atoms of each frame (a dry run exercises the
    code, not the physics).
    """
    sizes, device, dtype = context.sizes, context.device, torch.float64
    data_file = Path(context.args.data) / "3bpa" / "train_300K.xyz"
    if not data_file.is_file():
        return [{"skipped": f"{data_file} not found (carry shared/data/3bpa/train_300K.xyz; see GPU_RUN.md)"}]
    batch_size, atoms = min(5, sizes["train_frames"]), sizes["train_atoms_per_frame"]
    graphs = []
    for frame in ase.io.read(data_file, index=f":{sizes['train_frames'] // batch_size * batch_size}"):
        graphs.append(atoms_to_graph(frame[:atoms], 5.0, dtype))
        graphs[-1].energy = torch.tensor([frame.get_potential_energy()], dtype=dtype)
        graphs[-1].forces = torch.tensor(frame.get_forces()[:atoms], dtype=dtype)
    batches = [Batch.from_data_list(graphs[i : i + batch_size]).to(device) for i in range(0, len(graphs), batch_size)]
    per_atom = float(sum(b.energy.sum() for b in batches) / sum(b.pos.shape[0] for b in batches))
    config = quick_3bpa_model(energy_shift=per_atom, dtype="float64", **sizes["train_model"])
    rows = []
    for backend in available_backends():
        for kernel in kernels_for(backend, device):
            row = {"backend": backend, "kernel": kernel, "dtype": config["dtype"], "batch_size": batch_size}
            row |= {"channels": config["channels"], "lmax": config["lmax"], "atoms_per_frame": atoms or "all"}
            try:
                model = build_model({**config, "tp_backend": backend, "tp_options": {"kernel": kernel}}).to(device)
                model.train()
                optimizer = torch.optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
                times, losses = [], []

                def step(batch, model=model, optimizer=optimizer, losses=losses) -> None:
                    out = model(batch, compute_forces=True)
                    loss = torch.mean((out["energy"] - batch.energy) ** 2)
                    loss = loss + 100 * torch.mean((out["forces"] - batch.forces) ** 2)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    losses.append(loss.item())

                for index in range(sizes["train_warmup"] + sizes["train_steps"]):
                    seconds = single_call(lambda: step(batches[index % len(batches)]), device)  # noqa: B023
                    times += [seconds] if index >= sizes["train_warmup"] else []
                row |= {"steps_per_s": len(times) / sum(times), "steps": len(times)}
                row |= {"first_loss": losses[0], "last_loss": losses[-1]}
            except Exception as error:  # noqa: BLE001 - record the failing series, keep the others
                row["error"] = repr(error)[:300]
            rows.append(row)
    context.log("training: " + ", ".join(f"{r['backend']}[{r['kernel']}] {r.get('steps_per_s', 0):.1f}/s"
                                         for r in rows))  # fmt: skip
    return rows
