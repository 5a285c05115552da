"""Command-line papercuts: overrides anywhere after the config, errors that name the command and its flags,
``eval`` writing files only when asked, and a start-up that imports no torch for help and input errors.

Start-up time itself is measured by ``benchmarks/cli_startup.py`` (no timing assertion here); the test
checks the cause: ``equimol --help``, ``equimol train --help`` and a missing config file leave torch,
Lightning and e3nn unimported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_errors import config, xyz
from test_train_e2e import write_tiny_frames

from equimol.cli import main


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_overrides_after_the_flags_are_applied(shared_data: Path, tmp_path: Path, monkeypatch, capsys, flag) -> None:
    monkeypatch.chdir(tmp_path)
    name = config(tmp_path, shared_data)
    # an override that fails validation shows that it was read, wherever it stands
    assert main(["train", name, flag, "trainer.max_epochs=0"]) == 2
    assert "trainer.max_epochs must be >= 1" in capsys.readouterr().err
    assert main(["train", name, "trainer.max_epochs=0", flag]) == 2
    assert "trainer.max_epochs must be >= 1" in capsys.readouterr().err


def test_an_unknown_argument_error_names_the_command(shared_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    name = config(tmp_path, shared_data)
    assert main(["train", name, "--resume", "--bogus"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("equimol train: error: unrecognized arguments: --bogus") and "\n" not in error


def test_eval_writes_files_only_when_asked(shared_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from equimol.export import export_model
    from equimol.models import build_model

    monkeypatch.chdir(tmp_path)
    data = xyz(tmp_path, shared_data, count=3)
    model = build_model({"species": ["H", "C", "N", "O"], "channels": 4, "lmax": 1, "avg_num_neighbors": 4.0})
    export_model(model, tmp_path / "model.pt")
    before = sorted(path.name for path in tmp_path.iterdir())
    assert main(["eval", "model.pt", data, "--quiet"]) == 0
    assert "force component" in capsys.readouterr().out
    assert sorted(path.name for path in tmp_path.iterdir()) == before
    assert main(["eval", "model.pt", data, "--quiet", "--json", "m.json"]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([*before, "m.json"])


def test_eval_skips_isolated_atom_frames(shared_data: Path, tmp_path: Path, capsys) -> None:
    from test_data_mace import write_mace_file

    from equimol.export import export_model
    from equimol.models import build_model

    path = write_mace_file(shared_data, tmp_path, frames=3)
    model = build_model({"species": ["H", "C", "N", "O"], "channels": 4, "lmax": 1, "avg_num_neighbors": 4.0})
    export_model(model, tmp_path / "model.pt")
    arguments = ["eval", str(tmp_path / "model.pt"), str(path), "--energy-key", "REF_energy"]
    assert main([*arguments, "--forces-key", "REF_forces", "--quiet", "--json", str(tmp_path / "m.json")]) == 0
    import json

    assert json.loads((tmp_path / "m.json").read_text())["num_structures"] == 3


def test_a_missing_forces_label_names_the_eval_flag(shared_data: Path, tmp_path: Path, capsys) -> None:
    from equimol.export import export_model
    from equimol.models import build_model

    frames = write_tiny_frames(shared_data, tmp_path, 2)
    model = build_model({"species": ["H", "C", "N", "O"], "channels": 4, "lmax": 1, "avg_num_neighbors": 4.0})
    export_model(model, tmp_path / "model.pt")
    assert main(["eval", str(tmp_path / "model.pt"), str(frames), "--forces-key", "REF_forces"]) == 2
    error = capsys.readouterr().err
    assert "--forces-key none" in error and "forces_key=None" not in error


@pytest.mark.parametrize(
    "arguments", [["--help"], ["train", "--help"], ["train", "missing.yaml"], ["predict", "--help"]]
)
def test_help_and_input_errors_import_no_torch(tmp_path: Path, arguments) -> None:
    code = (
        "import sys\nfrom equimol.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('IMPORTED', sorted(m for m in ('torch', 'lightning', 'e3nn') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *arguments], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert "IMPORTED []" in result.stdout, result.stdout[-500:] + result.stderr[-2000:]
