"""Model-level sections of ``benchmarks/gpu_kernels.py``: energy+forces scaling, MACE, training steps/s.

* :func:`model_scaling`: ``model(graph, compute_forces=True)`` (eval mode) on periodic liquid-density
  water boxes of about 1k, 10k and 100k atoms (``equimol.microbench.model.water_box``), for every backend
  with the torch path and, where accepted, the fused Triton kernel (``equimol.microbench.model``'s model:
  2 layers, ``C x (0e + ... + L)``, cutoff 5 Å, no many-body block);
* :func:`mace_scaling`: the same boxes through MACE (``benchmarks/gpu_mace.py``), run in a subprocess
  with its own Python path because mace-torch pins e3nn 0.4.4 while equimol needs e3nn >= 0.5;
* :func:`training_steps`: optimizer steps per second on 3BPA (``configs/3bpa_quick.yaml``'s model,
  batches of 5 molecules of ``train_300K.xyz``, Adam, loss ``MSE(E) + 100 MSE(F)`` with forces by
  double backward), per backend and kernel.

A structure or series that fails (out of memory, say) is recorded with its error and skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from equimol.microbench.model import benchmark_structure, water_box
from equimol.microbench.tp import Series, timed
from equimol.tp import available_backends

ROOT = Path(__file__).resolve().parents[1]


def model_series(device: torch.device, kernels_for) -> list[tuple[Series, str]]:
    """``(Series, kernel)`` for every backend and every kernel it accepts."""
    return [(Series(b, b, {}), k) for b in available_backends() for k in kernels_for(b, device)]


def model_scaling(
    device: torch.device,
    lattices: list[int],
    kernels_for,
    channels: int,
    lmax: int,
    dtype: torch.dtype,
    warmup: int,
    repeats: int,
    deadline: float,
    log,
) -> list[dict]:
    """Energy+forces seconds per structure and series (see the module docstring)."""
    from dataclasses import asdict

    rows = []
    for lattice in lattices:
        atoms = water_box(lattice)
        if time.monotonic() > deadline:
            rows.append({"atoms": len(atoms), "skipped": "time budget spent"})
            continue
        for series in model_series(device, kernels_for):
            try:
                (point,) = benchmark_structure(
                    [series],
                    "water",
                    atoms,
                    channels=channels,
                    lmax=lmax,
                    radial_cutoff=5.0,
                    device=device,
                    dtype=dtype,
                    warmup=warmup,
                    repeats=repeats,
                )
                row = asdict(point)
                row.pop("all_s", None)
            except Exception as error:  # noqa: BLE001 - out of memory at 100k atoms, say: record and go on
                row = {"label": f"{series[0].label}[{series[1]}]", "atoms": len(atoms), "error": repr(error)[:300]}
            rows.append(row)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        log(
            f"model E+F, {len(atoms)} atoms: "
            + ", ".join(
                f"{r['label']} {1e3 * r['energy_forces_s']:.1f} ms" for r in rows[-8:] if "energy_forces_s" in r
            )
        )
    return rows


def mace_scaling(
    python: str, pythonpath: str, device: str, lattices: list[int], channels: int, lmax: int, dtype: str, timeout: float
) -> dict:
    """Run ``benchmarks/gpu_mace.py`` in a subprocess; its JSON record, or the reason it gave none."""
    environment = dict(os.environ)
    if pythonpath:
        environment["PYTHONPATH"] = pythonpath
    command = [
        python,
        str(ROOT / "benchmarks" / "gpu_mace.py"),
        "--device",
        device,
        "--lattices",
        ",".join(map(str, lattices)),
        "--channels",
        str(channels),
        "--lmax",
        str(lmax),
        "--dtype",
        dtype,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"skipped": f"{type(error).__name__}: {error}"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"skipped": f"gpu_mace.py exited {done.returncode}: {done.stderr.strip()[-600:]}"}
    return json.loads(lines[-1])


def three_bpa_batches(
    path: Path, count: int, batch_size: int, dtype: torch.dtype, device: torch.device, atoms: int | None = None
) -> list:
    """``count`` batches of ``batch_size`` 3BPA molecules with ``energy`` [B] and ``forces`` [n, 3] targets.

    ``atoms``: keep only the first atoms of each frame (dry runs: exercises the code, not the physics).
    """
    import ase.io
    from torch_geometric.data import Batch

    from equimol.graph import atoms_to_graph

    frames = ase.io.read(path, index=f":{count * batch_size}")
    graphs = []
    for frame in frames:
        keep = slice(0, atoms)
        graph = atoms_to_graph(frame[keep], 5.0, dtype)
        graph.energy = torch.tensor([frame.get_potential_energy()], dtype=dtype)
        graph.forces = torch.tensor(frame.get_forces()[keep], dtype=dtype)
        graphs.append(graph)
    return [Batch.from_data_list(graphs[i : i + batch_size]).to(device) for i in range(0, len(graphs), batch_size)]


def training_steps(
    device: torch.device,
    data_file: Path,
    kernels_for,
    dtype: torch.dtype,
    steps: int,
    warmup: int,
    log,
    overrides: dict | None = None,
    atoms_per_frame: int | None = None,
    frames: int = 50,
) -> list[dict]:
    """Optimizer steps per second on 3BPA for every backend and kernel (see the module docstring)."""
    import yaml

    from equimol.models import build_model

    if not data_file.is_file():
        return [{"skipped": f"{data_file} not found (carry shared/data/3bpa/train_300K.xyz; see GPU_RUN.md)"}]
    config = yaml.safe_load((ROOT / "configs" / "3bpa_quick.yaml").read_text())["model"]
    batch_size = min(5, frames)
    batches = three_bpa_batches(data_file, frames // batch_size, batch_size, dtype, device, atoms_per_frame)
    per_atom = float(sum(b.energy.sum() for b in batches) / sum(b.pos.shape[0] for b in batches))
    config.update(avg_num_neighbors=12.0, e0s=None, energy_shift=per_atom, energy_scale=1.0, **(overrides or {}))
    config["dtype"] = str(dtype).removeprefix("torch.")
    rows = []
    for backend in available_backends():
        for kernel in kernels_for(backend, device):
            row = {"backend": backend, "kernel": kernel, "dtype": config["dtype"], "batch_size": batch_size}
            row |= {"channels": config["channels"], "lmax": config["lmax"], "atoms_per_frame": atoms_per_frame or "all"}
            try:
                model = build_model({**config, "tp_backend": backend, "tp_options": {"kernel": kernel}}).to(device)
                model.train()
                optimizer = torch.optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
                times, losses = [], []

                def step(batch, model=model, optimizer=optimizer, losses=losses) -> None:
                    out = model(batch, compute_forces=True)
                    loss = torch.mean((out["energy"] - batch.energy) ** 2) + 100 * torch.mean(
                        (out["forces"] - batch.forces) ** 2
                    )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    losses.append(float(loss))

                for index in range(warmup + steps):
                    seconds = timed(lambda: step(batches[index % len(batches)]), device)  # noqa: B023
                    times += [seconds] if index >= warmup else []
                row.update(steps_per_s=len(times) / sum(times), steps=steps, first_loss=losses[0], last_loss=losses[-1])
            except Exception as error:  # noqa: BLE001 - record the failing series, keep the others
                row["error"] = repr(error)[:300]
            rows.append(row)
    log("training: " + ", ".join(f"{r['backend']}[{r['kernel']}] {r.get('steps_per_s', 0):.1f}/s" for r in rows))
    return rows


if __name__ == "__main__":
    sys.exit("run benchmarks/gpu_kernels.py")
