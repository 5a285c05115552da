r"""Energy-and-forces time of the whole potential against system size (``equimol bench model``).

For every system (``3bpa``: one 3BPA molecule read from a file; ``cu``: periodic fcc copper boxes;
``water``: periodic boxes of liquid-density water) and every size, the benchmark builds the radius
graph once, then times ``model(graph, compute_forces=True)`` (eval mode: forces without
``create_graph``) for each series, a tensor-product backend (or variant, e.g. ``gaunt/grid``) with
one message-passing kernel (``torch`` or ``triton``), or the ``torch``-kernel model as a compiled
model file (``export``: a ``torch.export`` program; ``aotinductor``: an AOTInductor package, minutes
to build on a CPU; :mod:`equimol.pt2_model`), built once per series and reused for every size. Series
are interleaved repeat by repeat so that drifting machine load affects them alike; medians are
reported, per structure.

Every series at one size uses the same configuration and seed (same parameters where the backends
share a weight layout), so the timing differences come from the tensor product and its kernel.
Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU and is not measured on a CPU.

The scaling exponent is the least-squares slope of ``log(time)`` against ``log(atoms)`` per
(series, system): 1 for linear scaling once the neighbour count is saturated.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import ase
import ase.build
import ase.io
import numpy as np
import torch

from equimol.errors import EquimolInputError
from equimol.microbench.report import save_figure
from equimol.microbench.tp import Series, parse_series, report_points, timed
from equimol.utils.dtype import resolve_dtype
from equimol.utils.machine import describe_machine, machine_label

SYSTEMS = ("3bpa", "cu", "water")
#: Message-passing kernels of the model, then the compiled model files (of the ``torch``-kernel model).
KERNELS = ("torch", "triton")
COMPILED = ("export", "aotinductor")
#: fcc cubic-cell repeats (4 r^3 atoms: 32 .. 2048) and water lattice sizes (3 n^3 atoms: 24 .. 2187).
CU_REPEATS = (2, 3, 4, 5, 6, 8)
WATER_LATTICE = (2, 3, 4, 6, 8, 9)
#: Å: O-O spacing of a cubic lattice at the density of liquid water (0.997 g/cm^3, 29.9 Å^3 per molecule).
WATER_SPACING = 29.9 ** (1.0 / 3.0)


@dataclass
class ModelMeasurement:
    """One series on one structure (times in seconds, memory in bytes; -1 where not measured)."""

    label: str
    backend: str
    kernel: str
    system: str
    atoms: int
    edges: int
    energy_forces_s: float
    all_s: list[float]
    peak_memory_bytes: int
    setup_s: float
    first_call_s: float = float("nan")


def copper_box(repeat: int) -> ase.Atoms:
    """Periodic fcc Cu (a = 3.61 Å), the cubic cell repeated ``repeat`` times per axis: ``4 repeat^3`` atoms."""
    return ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)


def water_box(lattice: int, seed: int = 0) -> ase.Atoms:
    """Periodic box of ``lattice^3`` randomly oriented water molecules at liquid density (``3 lattice^3`` atoms).

    Oxygens sit on a cubic lattice of spacing ``WATER_SPACING``; O-H 0.9572 Å, H-O-H 104.52 degrees.
    """
    rng = np.random.default_rng(seed)
    half_angle = math.radians(104.52) / 2
    local = 0.9572 * np.array(
        [[math.sin(half_angle), math.cos(half_angle), 0.0], [-math.sin(half_angle), math.cos(half_angle), 0.0]]
    )
    symbols, positions = [], []
    for index in np.ndindex(lattice, lattice, lattice):
        oxygen = np.array(index, dtype=float) * WATER_SPACING
        quaternion = rng.normal(size=4)
        w, x, y, z = quaternion / np.linalg.norm(quaternion)
        rotation = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        symbols += ["O", "H", "H"]
        positions += [oxygen, *(oxygen + local @ rotation.T)]
    return ase.Atoms(symbols, positions=positions, cell=[lattice * WATER_SPACING] * 3, pbc=True)


def structures(systems: Sequence[str], max_atoms: int, molecule_file: str | Path | None) -> list[tuple[str, ase.Atoms]]:
    """``(system, atoms)`` for every requested system and size with at most ``max_atoms`` atoms."""
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise EquimolInputError(f"unknown system(s) {unknown}; expected some of {list(SYSTEMS)}")
    result: list[tuple[str, ase.Atoms]] = []
    for system in systems:
        if system == "3bpa":
            if molecule_file is None:
                raise EquimolInputError(
                    "system '3bpa' needs --3bpa-file PATH, a file ASE can read whose first frame is a 3BPA "
                    "molecule (e.g. shared/data/3bpa/train_300K.xyz)"
                )
            path = Path(molecule_file)
            if not path.is_file():
                raise EquimolInputError(f"--3bpa-file {str(path)!r} does not exist")
            result.append((system, ase.io.read(path, index=0)))
        elif system == "cu":
            result += [(system, copper_box(r)) for r in CU_REPEATS if 4 * r**3 <= max_atoms]
        else:
            result += [(system, water_box(n)) for n in WATER_LATTICE if 3 * n**3 <= max_atoms]
    return result


def model_config(
    backend: str, options: dict, kernel: str, channels: int, lmax: int, radial_cutoff: float, dtype
) -> dict:
    """The benchmarked model: ``channels x (0e + 1o + ... + L)`` features, 2 layers, no SPE, no many-body block."""
    return {
        "species": ["H", "C", "N", "O", "Cu"],
        "channels": channels,
        "lmax": lmax,
        "num_layers": 2,
        "radial_cutoff": radial_cutoff,
        "avg_num_neighbors": 20.0,
        "tp_backend": backend,
        "tp_options": {**options, "kernel": kernel},
        "dtype": str(dtype).removeprefix("torch."),
        "seed": 0,
    }


def _compiled(model: torch.nn.Module, mode: str, device: torch.device) -> torch.nn.Module:
    """``model`` written as a compiled model file (``mode``: ``export`` or ``aotinductor``) and loaded back."""
    import tempfile

    from equimol.pt2_model import compile_model, load_compiled

    with tempfile.TemporaryDirectory() as folder:
        path = compile_model(model, Path(folder) / "model.pt2", mode=mode)
        return load_compiled(path, device=device)


def benchmark_structure(
    series: Sequence[tuple[Series, str]],
    system: str,
    atoms: ase.Atoms,
    *,
    channels: int,
    lmax: int,
    radial_cutoff: float,
    device: torch.device,
    dtype: torch.dtype,
    warmup: int,
    repeats: int,
    compiled: dict | None = None,
) -> list[ModelMeasurement]:
    """Time every ``(series, kernel)`` on one structure, interleaved; see the module docstring.

    ``compiled`` maps ``(series label, kernel)`` to compiled models already built (filled in here), so
    that a compiled file is built once for all structures.
    """
    compiled = {} if compiled is None else compiled
    from equimol.graph import atoms_to_graph
    from equimol.models import build_model

    graph = atoms_to_graph(atoms, radial_cutoff, dtype).to(device)
    models, setup = [], []
    for item, kernel in series:
        start = time.perf_counter()
        key = (item.label, kernel)
        if kernel in COMPILED and key in compiled:
            models.append(compiled[key])
        else:
            built = kernel if kernel in KERNELS else "torch"
            config = model_config(item.backend, item.options, built, channels, lmax, radial_cutoff, dtype)
            models.append(build_model(config).to(device).eval())
            if kernel in COMPILED:
                models[-1] = compiled[key] = _compiled(models[-1], kernel, device)
        setup.append(time.perf_counter() - start)
    times: list[list[float]] = [[] for _ in series]
    first_calls = [float("nan") for _ in series]  # the first call compiles what compiles lazily
    for repeat in range(warmup + repeats):
        for index, model in enumerate(models):
            elapsed = timed(lambda model=model: model(graph, compute_forces=True), device)
            if repeat == 0:
                first_calls[index] = elapsed
            if repeat >= warmup:
                times[index].append(elapsed)
    results = []
    for index, (item, kernel) in enumerate(series):
        peak = -1
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            baseline = torch.cuda.memory_allocated(device)
            models[index](graph, compute_forces=True)
            torch.cuda.synchronize(device)
            peak = int(torch.cuda.max_memory_allocated(device) - baseline)
        results.append(
            ModelMeasurement(
                label=f"{item.label}[{kernel}]",
                backend=item.backend,
                kernel=kernel,
                system=system,
                atoms=len(atoms),
                edges=int(graph.edge_index.shape[1]),
                energy_forces_s=statistics.median(times[index]),
                all_s=times[index],
                peak_memory_bytes=peak,
                setup_s=setup[index],
                first_call_s=first_calls[index],
            )
        )
    return results


def scaling_exponents(measurements: Sequence[ModelMeasurement]) -> list[dict]:
    """Least-squares slope of log(time) in log(atoms) per (label, system) with at least two sizes."""
    groups: dict[tuple[str, str], list[ModelMeasurement]] = {}
    for m in measurements:
        groups.setdefault((m.label, m.system), []).append(m)
    fits = []
    for (label, system), group in groups.items():
        xs = [math.log(m.atoms) for m in group]
        if len(set(xs)) < 2:
            continue
        ys = [math.log(m.energy_forces_s) for m in group]
        x_mean, y_mean = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys)) / sum((x - x_mean) ** 2 for x in xs)
        fits.append({"label": label, "system": system, "atoms_exponent": slope})
    return fits


def run_model_benchmark(
    backends: str | Sequence[str],
    kernels: Sequence[str],
    systems: Sequence[str],
    *,
    max_atoms: int = 2200,
    molecule_file: str | Path | None = None,
    channels: int = 32,
    lmax: int = 2,
    radial_cutoff: float = 5.0,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    warmup: int = 1,
    repeats: int = 3,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run every system and size; return a JSON-ready record (machine, settings, measurements, fits)."""
    torch_device = torch.device(device)
    torch_dtype = resolve_dtype(dtype)
    series = [(item, kernel) for item in parse_series(backends) for kernel in kernels]
    measurements: list[ModelMeasurement] = []
    compiled: dict = {}
    for system, atoms in structures(systems, max_atoms, molecule_file):
        model = {"channels": channels, "lmax": lmax, "radial_cutoff": radial_cutoff}
        timing = {"device": torch_device, "dtype": torch_dtype, "warmup": warmup, "repeats": repeats}
        points = benchmark_structure(series, system, atoms, **model, **timing, compiled=compiled)
        measurements.extend(points)
        report_points(progress, f"{system} {len(atoms)} atoms, {points[0].edges} edges", points, "energy_forces_s", 1)
    return {
        "benchmark": "model",
        "machine": describe_machine(torch_device),
        "settings": {
            "backends": [asdict(s) for s in parse_series(backends)],
            "kernels": list(kernels),
            "systems": list(systems),
            "max_atoms": max_atoms,
            "channels": channels,
            "lmax": lmax,
            "radial_cutoff": radial_cutoff,
            "dtype": str(torch_dtype).removeprefix("torch."),
            "warmup": warmup,
            "repeats": repeats,
            "timed": "model(graph, compute_forces=True), eval mode, per structure (batch of one)",
        },
        "measurements": [asdict(m) for m in measurements],
        "exponents": scaling_exponents(measurements),
    }


def format_model_table(record: dict) -> str:
    """A plain-text table of the medians, one row per (series, structure)."""
    lines = [f"# {machine_label(record['machine'])}, dtype {record['settings']['dtype']}"]
    lines.append(
        f"{'series':<24} {'system':<6} {'atoms':>6} {'edges':>8} {'E+F ms':>10} {'ms/atom':>9} {'1st call s':>10}"
    )
    lines.append("-" * len(lines[-1]))
    for m in record["measurements"]:
        ms = 1e3 * m["energy_forces_s"]
        lines.append(
            f"{m['label']:<24} {m['system']:<6} {m['atoms']:>6} {m['edges']:>8} {ms:>10.2f} {ms / m['atoms']:>9.4f} "
            f"{m.get('first_call_s', float('nan')):>10.2f}"
        )
    if record["exponents"]:
        lines.append("\nscaling exponent in atoms (least-squares slope of log time vs log atoms):")
        lines += [f"  {f['label']:<24} {f['system']:<6} {f['atoms_exponent']:.2f}" for f in record["exponents"]]
    return "\n".join(lines)


def plot_model(record: dict, path: str | Path) -> None:
    """Log-log PNG of energy-and-forces time against atoms: one colour per series, one marker per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 5))
    labels = list(dict.fromkeys(m["label"] for m in record["measurements"]))
    markers = {"3bpa": "*", "cu": "o", "water": "s"}
    for label_index, label in enumerate(labels):
        for system in SYSTEMS:
            group = sorted(
                (m for m in record["measurements"] if m["label"] == label and m["system"] == system),
                key=lambda m: m["atoms"],
            )
            if group:
                axis.plot(
                    [m["atoms"] for m in group],
                    [1e3 * m["energy_forces_s"] for m in group],
                    marker=markers[system],
                    linestyle="-" if system != "water" else "--",
                    color=f"C{label_index % 10}",
                    label=f"{label} {system}",
                )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("atoms per structure")
    axis.set_ylabel("median energy+forces time per structure [ms]")
    settings = record["settings"]
    axis.set_title(
        f"equimol bench model (C={settings['channels']}, L={settings['lmax']}, cutoff {settings['radial_cutoff']} Å, "
        f"{settings['dtype']})\n{machine_label(record['machine'])}",
        fontsize=8,
    )
    axis.legend(fontsize=7)
    axis.grid(True, which="both", alpha=0.3)
    save_figure(figure, path)
