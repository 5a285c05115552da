"""Correctness checks of ``benchmarks/gpu_kernels.py``: what must hold on the GPU before a speed counts.

Each check returns JSON-ready rows with the measured difference, the tolerance and ``passed``:

* :func:`fused_vs_torch`: every backend that accepts ``kernel="triton"``, float32 and float64,
  atomics and the deterministic mode: output and the three input gradients against the same
  backend's torch path (relative to the largest reference entry), deterministic mode bitwise twice;
* :func:`cueq_vs_cg`: the ``cueq`` backend (cuEquivariance's CUDA kernel when its ops package is
  installed) against ``cg``, product and message passing, float32 and float64;
* :func:`finite_difference_forces`: model forces against central differences of the energy, float64;
* :func:`nve_drift`: velocity-Verlet NVE of a small molecule through the ASE calculator.

Tolerances. float64: 1e-10 relative (exact products in float64 agree to ~1e-14; atomics only reorder
sums). float32: 1e-4 relative (float32 rounding of sums over up to ~100 edges per node and a few hundred
terms per output). Forces: ``1e-6 max|F| + 10 eps |E| / h`` for central differences with h = 1e-4 Å
in float64 (truncation ~h^2 |E'''|, rounding ~eps |E| / h); the forces must not vanish (max > 1e-6
eV/Å; the checked models have ``energy_scale`` 10: random-init forces were 1e-2 eV/Å for cg and cp and
2.5e-5 eV/Å for gaunt on the dry run's displaced CH4).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from equimol.microbench.tp import benchmark_irreps
from equimol.tp import TensorProduct, available_backends

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}
FORCE_TOLERANCE = 1e-6  # relative to max |F|, float64 central differences (module docstring)
EPS64 = float(torch.finfo(torch.float64).eps)


def relative_difference(result: torch.Tensor, reference: torch.Tensor) -> float:
    """``max |result - reference| / max |reference|`` (0 when both vanish)."""
    scale = reference.abs().max().item()
    difference = (result - reference).abs().max().item()
    return difference / scale if scale > 0 else difference


def random_problem(tp, num_nodes: int, num_edges: int, seed: int, device: torch.device, dtype: torch.dtype):
    """Node features, edge attributes, per-edge weights, senders, receivers and an upstream gradient."""
    generator = torch.Generator().manual_seed(seed)
    nodes = torch.randn(num_nodes, tp.irreps_in1.dim, generator=generator, dtype=torch.float64)
    attrs = torch.randn(num_edges, tp.irreps_in2.dim, generator=generator, dtype=torch.float64)
    weight = torch.randn(num_edges, tp.weight_numel, generator=generator, dtype=torch.float64)
    src = torch.randint(0, num_nodes, (num_edges,), generator=generator)
    dst = torch.randint(0, num_nodes, (num_edges,), generator=generator)
    upstream = torch.randn(num_nodes, tp.irreps_out.dim, generator=generator, dtype=torch.float64)
    cast = [t.to(device=device, dtype=dtype) for t in (nodes, attrs, weight, upstream)]
    return cast[0], cast[1], cast[2], src.to(device), dst.to(device), cast[3]


def _message_and_gradients(tp, nodes, attrs, weight, src, dst, upstream) -> list[torch.Tensor]:
    inputs = [t.detach().clone().requires_grad_(True) for t in (nodes, attrs, weight)]
    out = tp.message_passing(*inputs, src, dst, nodes.shape[0])
    return [out.detach(), *torch.autograd.grad(out, inputs, upstream)]


def _compare(results: list[torch.Tensor], references: list[torch.Tensor]) -> dict[str, float]:
    names = ("output", "grad_nodes", "grad_edge_attrs", "grad_weight")
    return {name: relative_difference(a, b) for name, a, b in zip(names, results, references)}


def fused_vs_torch(device: torch.device, lmax: int, channels: int, num_nodes: int, num_edges: int) -> list[dict]:
    """Fused Triton message passing against the same backend's torch path; see the module docstring."""
    rows = []
    for backend in available_backends():
        rows += _fused_rows(backend, benchmark_irreps(lmax, channels), device, num_nodes, num_edges)
    return rows


def _fused_rows(backend: str, irreps, device: torch.device, num_nodes: int, num_edges: int) -> list[dict]:
    rows = []
    for dtype in (torch.float32, torch.float64):
        for deterministic in (False, True):
            row = {"backend": backend, "dtype": str(dtype)[6:], "deterministic": deterministic, "irreps": irreps[0]}
            start = time.perf_counter()
            options = {"backend": backend, "internal_weights": False, "dtype": dtype, "device": device}
            try:
                fused = TensorProduct(*irreps, kernel="triton", deterministic=deterministic, **options)
            except (ValueError, ImportError, RuntimeError) as error:
                return [{"backend": backend, "skipped": f"{type(error).__name__}: {error}"}]
            plain = TensorProduct(*irreps, **options)
            problem = random_problem(plain, num_nodes, num_edges, 0, device, dtype)
            differences = _compare(_message_and_gradients(fused, *problem), _message_and_gradients(plain, *problem))
            worst = max(differences.values())
            row.update(differences=differences, tolerance=TOLERANCE[dtype], passed=worst <= TOLERANCE[dtype])
            if deterministic:
                with torch.no_grad():
                    first, second = (fused.message_passing(*problem[:5], num_nodes) for _ in range(2))
                row["bitwise_reproducible"] = bool(torch.equal(first, second))
                row["passed"] = row["passed"] and row["bitwise_reproducible"]
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
    return rows


def cueq_vs_cg(device: torch.device, lmax: int, channels: int, num_nodes: int, num_edges: int) -> list[dict]:
    """``cueq`` (method ``auto``) against ``cg``: product and message passing with gradients."""
    if "cueq" not in available_backends():
        return [{"skipped": "cuequivariance-torch is not installed (pip install 'equimol[cueq]')"}]
    irreps = benchmark_irreps(lmax, channels)
    rows = []
    for dtype in (torch.float32, torch.float64):
        cg = TensorProduct(*irreps, backend="cg", internal_weights=False, dtype=dtype, device=device)
        cueq = TensorProduct(*irreps, backend="cueq", internal_weights=False, dtype=dtype, device=device)
        problem = random_problem(cg, num_nodes, num_edges, 1, device, dtype)
        differences = _compare(_message_and_gradients(cueq, *problem), _message_and_gradients(cg, *problem))
        nodes, attrs, weight = problem[0][problem[3]], problem[1], problem[2]
        differences["product"] = relative_difference(cueq(nodes, attrs, weight), cg(nodes, attrs, weight))
        worst = max(differences.values())
        rows.append(
            {
                "dtype": str(dtype)[6:],
                "lmax": lmax,
                "cueq_method": cueq.method,
                "differences": differences,
                "tolerance": TOLERANCE[dtype],
                "passed": worst <= TOLERANCE[dtype],
            }
        )
    return rows


def small_model_config(backend: str, kernel: str, dtype: str, lmax: int = 2, channels: int = 16) -> dict:
    """The checked model: ``channels x (0e + ... + lmax)``, 2 layers, H/C/N/O, cutoff 5 Å."""
    return {
        "species": ["H", "C", "N", "O"],
        "channels": channels,
        "lmax": lmax,
        "num_layers": 2,
        "radial_cutoff": 5.0,
        "avg_num_neighbors": 12.0,
        "energy_scale": 10.0,
        "tp_backend": backend,
        "tp_options": {"kernel": kernel},
        "dtype": dtype,
        "seed": 0,
    }


def kernels_for(backend: str, device: torch.device) -> list[str]:
    """``torch`` and, where the backend has a fused kernel, ``triton``."""
    kernels = ["torch"]
    try:
        TensorProduct("2x0e + 2x1o", "0e + 1o", "2x0e + 2x1o", backend=backend, device=device, kernel="triton")
        kernels.append("triton")
    except (ValueError, ImportError, RuntimeError):
        pass
    return kernels


def finite_difference_forces(
    device: torch.device, molecule, components: int, channels: int = 16, lmax: int = 2, step: float = 1e-4
) -> list[dict]:
    """Model forces (every backend x kernel, float64) against central differences of the energy.

    ``components`` random (atom, direction) pairs are checked; ``step`` in Å; the model has
    ``channels x (0e + ... + lmax)`` features (:func:`small_model_config`).
    """
    from equimol.graph import atoms_to_graph
    from equimol.models import build_model

    rng = np.random.default_rng(0)
    picks = [(int(rng.integers(len(molecule))), int(rng.integers(3))) for _ in range(components)]
    rows = []
    for backend in available_backends():
        for kernel in kernels_for(backend, device):
            config = small_model_config(backend, kernel, "float64", lmax=lmax, channels=channels)
            model = build_model(config).to(device).eval()

            def energy(atoms, model=model) -> float:
                graph = atoms_to_graph(atoms, 5.0, torch.float64).to(device)
                with torch.no_grad():
                    return float(model(graph, compute_forces=False)["energy"].sum())

            graph = atoms_to_graph(molecule, 5.0, torch.float64).to(device)
            forces = model(graph, compute_forces=True)["forces"].detach().cpu().numpy()
            worst = 0.0
            for atom, direction in picks:
                shifted = []
                for sign in (1.0, -1.0):
                    atoms = molecule.copy()
                    atoms.positions[atom, direction] += sign * step
                    shifted.append(energy(atoms))
                numeric = -(shifted[0] - shifted[1]) / (2 * step)
                worst = max(worst, abs(numeric - forces[atom, direction]))
            scale = float(np.abs(forces).max())
            tolerance = FORCE_TOLERANCE * scale + 10 * EPS64 * abs(energy(molecule)) / step
            rows.append(
                {
                    "backend": backend,
                    "kernel": kernel,
                    "components": components,
                    "step_A": step,
                    "max_abs_error_eV_per_A": worst,
                    "max_abs_force_eV_per_A": scale,
                    "tolerance_eV_per_A": tolerance,
                    "passed": bool(worst <= tolerance and scale > 1e-6),  # forces must not vanish
                }
            )
    return rows


def model_with_kernel(source, kernel: str, device: torch.device, dtype: str = "float64"):
    """A model from a model file (``source`` a path) or a config dict, with ``tp_options.kernel`` replaced."""
    from equimol.export import read_model_file
    from equimol.models import build_model

    payload = read_model_file(source) if not isinstance(source, dict) else {"model_config": source}
    config = dict(payload["model_config"])
    config["tp_options"] = {**(config.get("tp_options") or {}), "kernel": kernel}
    model = build_model(config)
    if "state_dict" in payload:
        model.load_state_dict(payload["state_dict"], strict=True)
    return model.to(device=device, dtype=getattr(torch, dtype)).eval()


# eV/ps per atom: a loose bound; the CPU drifts of benchmarks/lammps_nve_drift.json are below 2e-8 eV/ps per atom.
NVE_DRIFT_TOLERANCE = 1e-4


def nve_drift(
    device: torch.device, molecule, model, steps: int, timestep_fs: float = 0.5, dtype: str = "float64"
) -> dict:
    """Total-energy drift of velocity-Verlet NVE from 300 K Maxwell-Boltzmann velocities.

    ``model``: a model module (a trained one if available). Returns the least-squares slope of
    the total energy (eV/ps and per atom), its largest deviation from the start and the wall time.
    """
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from equimol.calculator import EquimolCalculator

    atoms = molecule.copy()
    atoms.calc = EquimolCalculator(model=model, device=device, dtype=dtype)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    energies = [atoms.get_total_energy()]
    start = time.perf_counter()
    for _ in range(steps):
        dynamics.run(1)
        energies.append(atoms.get_total_energy())
    wall = time.perf_counter() - start
    times_ps = np.arange(len(energies)) * timestep_fs / 1000.0
    slope = float(np.polyfit(times_ps, energies, 1)[0])
    return {
        "atoms": len(atoms),
        "steps": steps,
        "timestep_fs": timestep_fs,
        "duration_ps": steps * timestep_fs / 1000.0,
        "dtype": dtype,
        "drift_eV_per_ps": slope,
        "drift_eV_per_ps_per_atom": slope / len(atoms),
        "max_deviation_eV": float(np.max(np.abs(np.asarray(energies) - energies[0]))),
        "wall_s": wall,
        "finite": bool(np.all(np.isfinite(energies))),
        "tolerance_eV_per_ps_per_atom": NVE_DRIFT_TOLERANCE,
    } | (
        {"passed": bool(np.all(np.isfinite(energies))) and abs(slope) / len(atoms) <= NVE_DRIFT_TOLERANCE}
        if steps * timestep_fs >= 100.0
        else {"judged": "no: under 0.1 ps a drift slope means nothing (dry run)"}
    )
