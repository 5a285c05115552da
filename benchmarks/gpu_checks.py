"""Correctness sections of ``benchmarks/gpu_kernels.py``: what must hold on the GPU before a speed counts.

Each section takes the run's :class:`gpu_kernels.Context` and returns JSON-ready rows with the measured
difference, the tolerance and ``passed``:

* :func:`fused_vs_torch`: every backend that accepts ``kernel="triton"``, float32 and float64,
  atomics and the deterministic mode: output and the three input gradients against the same
  backend's torch path (relative to the largest reference entry), deterministic mode bitwise twice;
* :func:`cueq_vs_cg`: the ``cueq`` backend (cuEquivariance's CUDA kernel when its ops package is
  installed) against ``cg``, product and message passing, float32 and float64;
* :func:`fd_forces`: model forces against central differences of the energy, float64;
* :func:`nve`: velocity-Verlet NVE of a small molecule through the ASE calculator, for the trained
  model (``--model``, each of its kernels) and random-init models of the backends with a fused
  kernel, through that kernel (the path whose forces must conserve energy).

Tolerances. float64: 1e-10 relative (exact products in float64 agree to ~1e-14; atomics only reorder
sums). float32: 1e-4 relative (float32 rounding of sums over up to ~100 edges per node and a few hundred
terms per output). Forces: ``1e-6 max|F| + 10 eps |E| / h`` for central differences with h = 1e-4 Å
in float64 (truncation ~h^2 |E'''|, rounding ~eps |E| / h); the forces must not vanish (max > 1e-6
eV/Å; the checked models have ``energy_scale`` 10: random-init forces were 1e-2 eV/Å for cg and cp and
2.5e-5 eV/Å for gaunt on the dry run's displaced CH4). NVE: a drift below 1e-4 eV/ps per atom, judged
only from 0.1 ps on (the CPU drifts of benchmarks/lammps_nve_drift.json are below 2e-8 eV/ps per atom).
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import torch
from ase import units
from ase.calculators.fd import calculate_numerical_forces
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from equimol.calculator import EquimolCalculator
from equimol.export import read_model_file
from equimol.microbench.model import model_config
from equimol.microbench.tp import benchmark_irreps
from equimol.models import build_model
from equimol.tp import TensorProduct, available_backends, factored_backends

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}
FORCE_TOLERANCE = 1e-6  # relative to max |F|, float64 central differences (module docstring)
NVE_DRIFT_TOLERANCE = 1e-4  # eV/ps per atom (module docstring)


def relative_difference(result: torch.Tensor, reference: torch.Tensor) -> float:
    """``max |result - reference| / max |reference|`` (0 when both vanish)."""
    scale = reference.abs().max().item()
    difference = (result - reference).abs().max().item()
    return difference / scale if scale > 0 else difference


def random_problem(tp, num_nodes: int, num_edges: int, seed: int, device: torch.device, dtype: torch.dtype):
    """Node features, edge attributes, per-edge weights, senders, receivers and an upstream gradient."""
    generator = torch.Generator().manual_seed(seed)
    dims = (num_nodes, tp.irreps_in1.dim), (num_edges, tp.irreps_in2.dim), (num_edges, tp.weight_numel)
    nodes, attrs, weight = (torch.randn(*d, generator=generator, dtype=torch.float64) for d in dims)
    src, dst = (torch.randint(0, num_nodes, (num_edges,), generator=generator).to(device) for _ in range(2))
    upstream = torch.randn(num_nodes, tp.irreps_out.dim, generator=generator, dtype=torch.float64)
    nodes, attrs, weight, upstream = (t.to(device=device, dtype=dtype) for t in (nodes, attrs, weight, upstream))
    return nodes, attrs, weight, src, dst, upstream


def _compare(first, second, problem) -> dict[str, float]:
    """Relative differences of two tensor products' message passing and its three input gradients."""
    results = []
    for tp in (first, second):
        inputs = [t.detach().clone().requires_grad_(True) for t in problem[:3]]
        out = tp.message_passing(*inputs, *problem[3:5], problem[0].shape[0])
        results.append([out.detach(), *torch.autograd.grad(out, inputs, problem[5])])
    names = ("output", "grad_nodes", "grad_edge_attrs", "grad_weight")
    return {name: relative_difference(a, b) for name, a, b in zip(names, *results)}


def _judged(differences: dict[str, float], dtype: torch.dtype) -> dict:
    tolerance = TOLERANCE[dtype]
    return {"differences": differences, "tolerance": tolerance, "passed": max(differences.values()) <= tolerance}


def fused_vs_torch(context) -> list[dict]:
    """Fused Triton message passing against the same backend's torch path; see the module docstring."""
    sizes, device = context.sizes, context.device
    irreps = benchmark_irreps(sizes["check_lmax"], sizes["check_channels"])
    rows = []
    for backend in available_backends():
        for dtype, deterministic in itertools.product((torch.float32, torch.float64), (False, True)):
            options = {"backend": backend, "internal_weights": False, "dtype": dtype, "device": device}
            start = time.perf_counter()
            try:
                fused = TensorProduct(*irreps, kernel="triton", deterministic=deterministic, **options)
            except (ValueError, ImportError, RuntimeError) as error:
                rows.append({"backend": backend, "skipped": f"{type(error).__name__}: {error}"})
                break
            plain = TensorProduct(*irreps, **options)
            problem = random_problem(plain, sizes["check_nodes"], sizes["check_edges"], 0, device, dtype)
            row = {"backend": backend, "dtype": str(dtype)[6:], "deterministic": deterministic, "irreps": irreps[0]}
            row |= _judged(_compare(fused, plain, problem), dtype)
            if deterministic:
                with torch.no_grad():
                    first, second = (fused.message_passing(*problem[:5], sizes["check_nodes"]) for _ in range(2))
                row["bitwise_reproducible"] = bool(torch.equal(first, second))
                row["passed"] = row["passed"] and row["bitwise_reproducible"]
            rows.append(row | {"seconds": time.perf_counter() - start})
    return rows


def cueq_vs_cg(context) -> list[dict]:
    """``cueq`` (method ``auto``) against ``cg``: product and message passing with gradients."""
    if "cueq" not in available_backends():
        return [{"skipped": "cuequivariance-torch is not installed (pip install 'equimol[cueq]')"}]
    sizes, device = context.sizes, context.device
    irreps = benchmark_irreps(sizes["cueq_lmax"], sizes["check_channels"])
    rows = []
    for dtype in (torch.float32, torch.float64):
        options = {"internal_weights": False, "dtype": dtype, "device": device}
        cg, cueq = (TensorProduct(*irreps, backend=backend, **options) for backend in ("cg", "cueq"))
        problem = random_problem(cg, sizes["check_nodes"], sizes["check_edges"], 1, device, dtype)
        differences = _compare(cueq, cg, problem)
        nodes, attrs, weight = problem[0][problem[3]], problem[1], problem[2]
        differences["product"] = relative_difference(cueq(nodes, attrs, weight), cg(nodes, attrs, weight))
        row = {"dtype": str(dtype)[6:], "lmax": sizes["cueq_lmax"], "cueq_method": cueq.method}
        rows.append(row | _judged(differences, dtype))
    return rows


def small_model_config(backend: str, kernel: str, dtype: str, lmax: int = 2, channels: int = 16) -> dict:
    """The checked model: ``channels x (0e + ... + lmax)``, 2 layers, H/C/N/O, cutoff 5 Å, ``energy_scale`` 10."""
    config = model_config(backend, {}, kernel, channels, lmax, 5.0, dtype)
    return config | {"species": ["H", "C", "N", "O"], "avg_num_neighbors": 12.0, "energy_scale": 10.0}


def kernels_for(backend: str, device: torch.device) -> list[str]:
    """``torch`` and, where the backend has a fused kernel that builds on ``device``, ``triton``."""
    try:
        TensorProduct("2x0e + 2x1o", "0e + 1o", "2x0e + 2x1o", backend=backend, device=device, kernel="triton")
    except (ValueError, ImportError, RuntimeError):
        return ["torch"]
    return ["torch", "triton"]


def fd_forces(context, step: float = 1e-4) -> list[dict]:
    """Model forces (every backend x kernel, float64) against central differences of the energy (ASE's).

    ``sizes["fd_components"]`` random (atom, direction) pairs are checked; ``step`` in Å; the model is
    :func:`small_model_config` with ``sizes["model_channels"]`` channels up to ``sizes["model_lmax"]``.
    """
    molecule, sizes, device = context.molecule, context.sizes, context.device
    rng = np.random.default_rng(0)
    picks = [(int(rng.integers(len(molecule))), int(rng.integers(3))) for _ in range(sizes["fd_components"])]
    rows = []
    for backend in available_backends():
        for kernel in kernels_for(backend, device):
            config = small_model_config(backend, kernel, "float64", sizes["model_lmax"], sizes["model_channels"])
            atoms = molecule.copy()
            atoms.calc = EquimolCalculator(model=build_model(config), device=device, dtype="float64")
            forces = atoms.get_forces()
            numeric = [calculate_numerical_forces(atoms, step, [atom], [axis])[0, 0] for atom, axis in picks]
            worst = max(abs(value - forces[atom, axis]) for value, (atom, axis) in zip(numeric, picks))
            scale = float(np.abs(forces).max())
            rounding = 10 * torch.finfo(torch.float64).eps * abs(atoms.get_potential_energy()) / step
            tolerance = FORCE_TOLERANCE * scale + rounding
            errors = {"max_abs_error_eV_per_A": float(worst), "max_abs_force_eV_per_A": scale}
            row = {"backend": backend, "kernel": kernel, "components": len(picks), "step_A": step, **errors}
            row["tolerance_eV_per_A"] = tolerance
            rows.append(row | {"passed": bool(worst <= tolerance and scale > 1e-6)})  # forces must not vanish
    return rows


def nve(context) -> list[dict]:
    """NVE drift of the trained model (``--model``; each of its kernels), then of a random-init model of
    every backend with a fused kernel, run through that kernel (see the module docstring)."""
    device, runs = context.device, []  # (label, model config, weights or None, kernels)
    if context.args.model:
        payload = read_model_file(context.args.model)
        config = payload["model_config"]
        kernels = kernels_for(config.get("tp_backend", "cg"), device)
        runs.append((context.args.model, config, payload["state_dict"], kernels))
    for backend in factored_backends():
        if "triton" in kernels_for(backend, device):
            runs.append((f"random-init {backend}", small_model_config(backend, "triton", "float64"), None, ["triton"]))
    rows = []
    for label, config, weights, kernels in runs:
        for kernel in kernels:
            model = build_model({**config, "tp_options": {**(config.get("tp_options") or {}), "kernel": kernel}})
            if weights is not None:
                model.load_state_dict(weights, strict=True)
            model = model.to(device=device, dtype=torch.float64).eval()
            drift = nve_drift(device, context.molecule, model, context.sizes["nve_steps"])
            rows.append({"model": label, "kernel": kernel, **drift})
    return rows


def nve_drift(device: torch.device, molecule, model, steps: int, timestep_fs: float = 0.5) -> dict:
    """Total-energy drift of float64 velocity-Verlet NVE from 300 K Maxwell-Boltzmann velocities.

    Returns the least-squares slope of the total energy (eV/ps and per atom), its largest deviation
    from the start and the wall time.
    """
    atoms = molecule.copy()
    atoms.calc = EquimolCalculator(model=model, device=device, dtype="float64")
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    energies = []
    dynamics.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)  # step 0 and every step
    start = time.perf_counter()
    dynamics.run(steps)
    wall = time.perf_counter() - start
    slope = float(np.polyfit(np.arange(len(energies)) * timestep_fs / 1000.0, energies, 1)[0])
    finite = bool(np.all(np.isfinite(energies)))
    row = {"atoms": len(atoms), "steps": steps, "timestep_fs": timestep_fs, "duration_ps": steps * timestep_fs / 1000.0,
           "dtype": "float64", "drift_eV_per_ps": slope, "drift_eV_per_ps_per_atom": slope / len(atoms),
           "max_deviation_eV": float(np.max(np.abs(np.asarray(energies) - energies[0]))), "wall_s": wall,
           "finite": finite, "tolerance_eV_per_ps_per_atom": NVE_DRIFT_TOLERANCE}  # fmt: skip
    if steps * timestep_fs < 100.0:
        return row | {"judged": "no: under 0.1 ps a drift slope means nothing (dry run)"}
    return row | {"passed": finite and abs(slope) / len(atoms) <= NVE_DRIFT_TOLERANCE}
