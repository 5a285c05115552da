"""The README's relaxation and NVE example runs as written, with an untrained model file in place of the
main job's ``runs/3bpa_quick/model.pt`` (the example's two paths are the only substitutions)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from equimol.export import export_model
from equimol.models import build_model

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_calculator_example_runs(shared_data: Path, tmp_path: Path, capsys) -> None:
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
            "energy_scale": 1.0,
        }
    )
    model_file = export_model(model, tmp_path / "model.pt")
    assert '"runs/3bpa_quick/model.pt"' in example and '"../shared/data"' in example
    code = example.replace('"runs/3bpa_quick/model.pt"', repr(str(model_file))).replace(
        '"../shared/data"', repr(str(shared_data))
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # 27 atoms: one thread is fastest (see tests/test_calculator.py)
    try:
        namespace: dict = {}
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    finally:
        torch.set_num_threads(previous)
    atoms = namespace["atoms"]
    assert len(namespace["energies"]) == 21
    assert "total energy drift" in capsys.readouterr().out
    assert atoms.get_forces().shape == (27, 3)
