"""The PNG of ``benchmarks/gpu_kernels.py``: convolution time per degree, model E+F time per size."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_record(record: dict, path: str | Path) -> None:
    """Left: forward+backward ms of every convolution series against L. Right: E+F s against atoms."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    convolution = record["sections"].get("convolution", {}).get("result") or []
    series: dict[str, list[tuple[int, float]]] = {}
    for row in convolution:
        for label, values in row.get("series", {}).items():
            series.setdefault(label, []).append((row["lmax"], 1e3 * values["forward_backward_s"]))
    for label, points in sorted(series.items()):
        left.plot(*zip(*points), marker="o", label=label)
    left.set(xlabel="L", ylabel="forward+backward (ms)", yscale="log", title="convolution (gather, TP, scatter)")
    if series:
        left.legend(fontsize=7)
    models: dict[str, list[tuple[int, float]]] = {}
    for row in record["sections"].get("model_scaling", {}).get("result") or []:
        if "energy_forces_s" in row:
            models.setdefault(row["label"], []).append((row["atoms"], row["energy_forces_s"]))
    mace = record["sections"].get("mace", {}).get("result") or {}
    for row in mace.get("rows", []):
        if "energy_forces_s" in row:
            models.setdefault(row["label"], []).append((row["atoms"], row["energy_forces_s"]))
    for label, points in sorted(models.items()):
        right.plot(*zip(*sorted(points)), marker="o", label=label)
    right.set(xlabel="atoms", ylabel="energy+forces (s)", xscale="log", yscale="log", title="model, water boxes")
    if models:
        right.legend(fontsize=7)
    machine = record["machine"]
    figure.suptitle(f"{record['kind']}: {machine.get('gpu') or machine.get('cpu')}, torch {machine['torch']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
