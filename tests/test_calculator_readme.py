"""The README's relaxation and NVE example runs as written, and without a warning, with an untrained model
file in place of the main job's ``runs/3bpa_quick/model.pt`` (the example's two paths are the only
substitutions)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import ase.optimize
import numpy as np
import torch
from ase.optimize import BFGS

from equimol.export import export_model
from equimol.models import build_model

README = Path(__file__).resolve().parents[1] / "README.md"


class _RecordingBFGS(BFGS):
    """ASE's BFGS, recording what each ``run`` returned and the largest force when it stopped."""

    runs: list[tuple[bool, float, int]] = []

    def run(self, fmax: float = 0.05, steps: int = 100_000_000):
        converged = super().run(fmax=fmax, steps=steps)
        largest = float(np.linalg.norm(self.atoms.get_forces(), axis=1).max())
        _RecordingBFGS.runs.append((bool(converged), largest, self.nsteps))
        return converged


def test_readme_calculator_example_runs(shared_data: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    example = next(block for block in blocks if "EquimolCalculator" in block)
    model = build_model(
        {
            "species": ["H", "C", "N", "O"],
            "channels": 4,
            "lmax": 1,
            "num_layers": 1,
            "radial_mlp_hidden": [8],
            "readout_hidden": 4,
            "avg_num_neighbors": 12.0,
            "energy_scale": 5.0,  # largest force ~0.04 eV/Å at the perturbed frame (0.008 at 1.0): BFGS must work
        }
    )
    model_file = export_model(model, tmp_path / "model.pt")
    assert '"runs/3bpa_quick/model.pt"' in example and '"../shared/data"' in example
    code = example.replace('"runs/3bpa_quick/model.pt"', repr(str(model_file))).replace(
        '"../shared/data"', repr(str(shared_data))
    )
    _RecordingBFGS.runs = []
    monkeypatch.setattr(ase.optimize, "BFGS", _RecordingBFGS)  # the example imports BFGS from ase.optimize
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # 27 atoms: one thread is fastest (see tests/test_calculator.py)
    try:
        namespace: dict = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    finally:
        torch.set_num_threads(previous)
    assert not caught, [f"{w.category.__name__}: {w.message}" for w in caught]
    atoms = namespace["atoms"]
    # the relaxation converged: BFGS says so, every force is below fmax = 0.01 eV/Å, and it took steps
    [(converged, largest_force, steps)] = _RecordingBFGS.runs
    assert converged and largest_force < 0.01 and steps > 0, _RecordingBFGS.runs
    assert len(namespace["energies"]) == 21
    assert "total energy drift" in capsys.readouterr().out
    assert atoms.get_forces().shape == (27, 3)
