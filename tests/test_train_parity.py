"""Parity plots read well at any data size: no two tick labels of an axis overlap.

Cases: a short run (5 structures, energies 0.1 eV/atom off and 2 meV apart, near -654 eV/atom, the
case whose tick labels ran into each other), a long one (5000 structures, tight fit) and forces
spanning 1e-3 to 1e2 eV/Å. The labels' drawn extents (matplotlib, Agg) are compared pairwise.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from equimol.train.evaluate import EvaluationReport, parity_figure  # noqa: E402


def _report(count: int, spread: float, offset: float, force_scale: float, seed: int = 0) -> EvaluationReport:
    rng = np.random.default_rng(seed)
    reference = -654.1 + rng.normal(scale=spread, size=count)
    predicted = reference + offset + rng.normal(scale=spread, size=count)
    forces = rng.normal(scale=force_scale, size=9 * count)
    arrays = {
        "energy_ref": 27 * reference,
        "energy_pred": 27 * predicted,
        "natoms": np.full(count, 27),
        "forces_ref": forces,
        "forces_pred": forces + rng.normal(scale=0.1 * force_scale, size=forces.size),
    }
    return EvaluationReport({"energy_per_atom_rmse": abs(offset), "forces_rmse": 0.1 * force_scale}, count, arrays)


def _overlapping_labels(figure) -> list[str]:
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    found = []
    for axis in figure.axes:
        for ticks in (axis.xaxis, axis.yaxis):
            boxes = [(label.get_text(), label.get_window_extent(renderer)) for label in ticks.get_ticklabels()]
            boxes = [(text, box) for text, box in boxes if text and box.width > 0]
            for (first, a), (second, b) in zip(boxes, boxes[1:]):
                if a.overlaps(b):
                    found.append(f"{first!r} / {second!r}")
    return found


@pytest.mark.parametrize(
    ("count", "spread", "offset", "force_scale"),
    [(5, 0.002, 0.12, 1.0), (3, 1e-5, 1e-4, 1e-3), (5000, 0.05, 0.0, 2.0), (40, 0.5, -2.0, 100.0)],
)
def test_tick_labels_never_overlap(count, spread, offset, force_scale) -> None:
    figure = parity_figure(_report(count, spread, offset, force_scale), title="test")
    try:
        assert not _overlapping_labels(figure)
    finally:
        plt.close(figure)
