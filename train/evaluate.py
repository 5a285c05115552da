"""Evaluate a potential on labelled data: error table, JSON and parity plot (``equimol eval``).

Metrics are those of :mod:`equimol.train.metrics`: energy RMSE/MAE per structure (eV) and per atom
(eV/atom), force-component RMSE/MAE (eV/Å) on the atoms in ``force_mask``, and stress-component
RMSE/MAE (eV/Å³) when the data carry stress. Energies compared are total energies: when the labels
had per-element references subtracted, ``references`` (``{Z: eV}``) adds them back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from equimol.datasets.references import add_references, reference_table
from tqdm.auto import tqdm

from equimol.utils.io import write_files

from .metrics import ErrorMetrics


@dataclass
class EvaluationReport:
    """Metrics (``energy_rmse``, ...; eV, eV/atom, eV/Å, eV/Å³) and the predicted/reference values behind them."""

    metrics: dict[str, float]
    num_structures: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def evaluate(
    model: torch.nn.Module, loader, references: dict | None = None, progress: bool = False
) -> EvaluationReport:
    """Run ``model`` (eval mode, its own device and dtype) over every batch of ``loader``.

    Args:
        model: a :class:`~equimol.models.potential.Potential`.
        loader: batches of labelled graphs (``energy``, ``forces``, ``force_mask``, optionally ``stress``).
        references: ``{atomic number: eV}`` to add back to the energy labels, or ``None``.
        progress: show a progress bar.
    """
    model.eval()
    device = next(model.parameters()).device
    table = reference_table(references)
    metrics = ErrorMetrics()
    collected: dict[str, list[np.ndarray]] = {
        k: [] for k in ("energy_pred", "energy_ref", "natoms", "forces_pred", "forces_ref")
    }
    count = 0
    for batch in tqdm(loader, disable=not progress, desc="evaluate", unit="batch"):
        batch = batch.to(device)
        with_stress = getattr(batch, "stress", None) is not None
        prediction = model(batch, compute_forces=True, compute_stress=with_stress)
        prediction = {k: v.detach() for k, v in prediction.items()}
        node_graph = batch.batch
        target = add_references(batch.energy, batch.atomic_numbers, node_graph, table)
        metrics.update(prediction, batch, target)
        natoms = torch.bincount(node_graph, minlength=target.shape[0])
        collected["energy_pred"].append(prediction["energy"].cpu().double().numpy())
        collected["energy_ref"].append(target.cpu().double().numpy())
        collected["natoms"].append(natoms.cpu().numpy())
        mask = batch.force_mask
        collected["forces_pred"].append(prediction["forces"][mask].cpu().double().numpy().reshape(-1))
        collected["forces_ref"].append(batch.forces[mask].cpu().double().numpy().reshape(-1))
        count += int(target.shape[0])
    if count == 0:
        raise ValueError("evaluate: the data loader gave no structures")
    arrays = {k: np.concatenate(v) for k, v in collected.items()}
    return EvaluationReport(metrics.compute(), count, arrays)


_ROWS = (
    ("energy", "energy / structure", "meV", 1e3),
    ("energy_per_atom", "energy / atom", "meV/atom", 1e3),
    ("forces", "force component", "meV/Å", 1e3),
    ("stress", "stress component", "meV/Å³", 1e3),
)


def format_table(metrics: dict[str, float], title: str = "") -> str:
    """A plain-text table of RMSE and MAE in meV units."""
    lines = [f"{title:<20s} {'RMSE':>12s} {'MAE':>12s}  unit"]
    for key, label, unit, factor in _ROWS:
        if f"{key}_rmse" in metrics:
            lines.append(
                f"{label:<20s} {metrics[f'{key}_rmse'] * factor:12.3f} {metrics[f'{key}_mae'] * factor:12.3f}  {unit}"
            )
    return "\n".join(lines)


def write_report(
    report: EvaluationReport,
    json_path: str | Path | None,
    plot_path: str | Path | None,
    title: str = "",
    extra: dict | None = None,
) -> None:
    """Print the table; write the metrics as JSON (SI-like units: eV, eV/Å, eV/Å³) and a parity plot PNG."""
    print(format_table(report.metrics, title))
    contents = {}
    if plot_path is not None:
        contents[plot_path] = parity_png(report, title)
    if json_path is not None:
        payload = {
            "num_structures": report.num_structures,
            "units": {"energy": "eV", "energy_per_atom": "eV/atom", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3"},
            "metrics": report.metrics,
            **(extra or {}),
        }
        contents[json_path] = (json.dumps(payload, indent=2) + "\n").encode()
    write_files(contents)  # both or neither: a full disk or a read-only folder leaves no half of a report


def parity_plot(report: EvaluationReport, path: str | Path, title: str = "") -> None:
    """Write :func:`parity_png` to ``path`` (atomically)."""
    write_files({path: parity_png(report, title)})


def parity_png(report: EvaluationReport, title: str = "") -> bytes:
    """:func:`parity_figure` as PNG bytes (120 dpi)."""
    import io

    import matplotlib.pyplot as plt

    figure = parity_figure(report, title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()


def parity_figure(report: EvaluationReport, title: str = ""):
    """Predicted vs reference energy per atom and force components, side by side, square with equal ranges.

    Energies are shown relative to the mean reference energy per atom (meV/atom; the mean in the axis
    label), so that tick labels stay short whatever the absolute energies; at most five ticks per axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    arrays = report.arrays
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    per_atom_ref = arrays["energy_ref"] / arrays["natoms"]
    per_atom_pred = arrays["energy_pred"] / arrays["natoms"]
    origin = float(per_atom_ref.mean()) if per_atom_ref.size else 0.0
    energy_label = f"energy per atom (meV, from {origin:.4f} eV)"
    panels = (
        (
            axes[0],
            1e3 * (per_atom_ref - origin),
            1e3 * (per_atom_pred - origin),
            energy_label,
            "energy_per_atom_rmse",
            "meV/atom",
        ),
        (axes[1], arrays["forces_ref"], arrays["forces_pred"], "force component (eV/Å)", "forces_rmse", "meV/Å"),
    )
    for axis, reference, predicted, label, key, unit in panels:
        if reference.size == 0:
            axis.set_visible(False)
            continue
        low, high = float(min(reference.min(), predicted.min())), float(max(reference.max(), predicted.max()))
        margin = 0.05 * (high - low) or 1.0
        low, high = low - margin, high + margin
        axis.plot([low, high], [low, high], color="0.6", linewidth=1)
        axis.scatter(reference, predicted, s=3, alpha=0.4)
        axis.set_xlim(low, high)
        axis.set_ylim(low, high)
        axis.set_aspect("equal")
        for ticks in (axis.xaxis, axis.yaxis):
            ticks.set_major_locator(MaxNLocator(nbins=5))
        axis.set_xlabel(f"reference {label}")
        axis.set_ylabel(f"predicted {label}")
        axis.set_title(f"RMSE {report.metrics.get(key, float('nan')) * 1e3:.2f} {unit}")
    figure.suptitle(f"{title} ({report.num_structures} structures)".strip())
    figure.tight_layout()
    return figure
