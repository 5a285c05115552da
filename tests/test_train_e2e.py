"""End-to-end training of a tiny model on 20 real 3BPA frames: fit, checkpoints, EMA, export, test metrics.

``write_tiny_config`` is shared by the other training, CLI and calculator tests (imported from here).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from equimol.train.config import load_config
from equimol.train.run import train
from harness import tiny_model_section

from equimol.export import load_model, read_model_file

TINY_FRAMES = 20


def write_tiny_frames(shared_data: Path, folder: Path, count: int = TINY_FRAMES) -> Path:
    """The first ``count`` frames of 3BPA train_300K (real DFT labels), as an extxyz in ``folder``."""
    lines = (shared_data / "3bpa" / "train_300K.xyz").read_text().splitlines()
    out, start = [], 0
    for _ in range(count):
        atoms = int(lines[start])
        out += lines[start : start + atoms + 2]
        start += atoms + 2
    path = folder / "tiny.xyz"
    path.write_text("\n".join(out) + "\n")
    return path


def tiny_config(shared_data: Path, folder: Path, **trainer) -> dict:
    """A config mapping: 4-channel one-layer model, 16 training / 4 validation frames, batches of 2."""
    frames = write_tiny_frames(shared_data, folder)
    return {
        "model": tiny_model_section(["H", "C", "N", "O"]),
        "data": {
            "data_dir": str(folder),
            "train": frames.name,
            "test": frames.name,
            "val_fraction": 0.2,
            "element_references": str(shared_data / "3bpa" / "iso_atoms.xyz"),
            "batch_size": 2,
            "eval_batch_size": 2,
        },
        "optimizer": {"lr": 0.005, "ema_decay": 0.9},
        "scheduler": {"name": "plateau", "patience": 2},
        "trainer": {"run_dir": str(folder / "run"), "max_epochs": 2, "progress_bar": False, **trainer},
    }


def write_tiny_config(shared_data: Path, folder: Path, **trainer) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(shared_data, folder, **trainer)))
    return path


@pytest.fixture(scope="module")
def trained_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("tiny_run")
    config = load_config(write_tiny_config(shared_data, folder))
    return train(config)


def test_run_folder_has_checkpoints_logs_model_and_metrics(trained_run: dict) -> None:
    run_dir = Path(trained_run["run_dir"])
    for name in (
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "config.yaml",
        "model.pt",
        "test_metrics.json",
        "test_parity.png",
    ):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "csv").glob("version_*/metrics.csv"))
    assert list((run_dir / "tensorboard").glob("version_*/events.out.tfevents.*"))
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert isinstance(resolved["model"]["avg_num_neighbors"], float)  # "auto" was resolved from the data
    metrics = json.loads((run_dir / "test_metrics.json").read_text())["metrics"]
    for key in ("energy_rmse", "energy_mae", "energy_per_atom_rmse", "forces_rmse", "forces_mae"):
        assert math.isfinite(metrics[key]) and metrics[key] >= 0
    assert trained_run["test"] == pytest.approx(metrics)


def test_checkpoint_holds_ema_and_export_uses_it(trained_run: dict) -> None:
    run_dir = Path(trained_run["run_dir"])
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    # 16 training frames in batches of 2 for 2 epochs: 16 optimizer steps, 16 EMA updates
    assert checkpoint["global_step"] == 16
    assert checkpoint["ema"]["num_updates"] == 16
    payload = read_model_file(run_dir / "model.pt")
    assert payload["metadata"]["ema"] is True
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=False)
    model = load_model(run_dir / "model.pt")
    differs = 0
    for name, parameter in model.named_parameters():
        expected = best["ema"]["shadow"][name].to(parameter.dtype)
        assert torch.equal(parameter.detach(), expected), name
        differs += not torch.equal(best["state_dict"][f"model.{name}"], expected)
    assert differs > 0  # the exported weights are the averages, not the raw weights


def test_test_metrics_equal_an_independent_evaluation(trained_run: dict, shared_data: Path) -> None:
    """The reported test RMSE is recomputed here by a plain loop over frames (float64, 1e-9 relative)."""
    import ase.io
    import numpy as np

    from equimol.calculator import EquimolCalculator

    run_dir = Path(trained_run["run_dir"])
    calculator = EquimolCalculator(model=run_dir / "model.pt")
    frames = ase.io.read(run_dir.parent / "tiny.xyz", ":")
    energy_errors, force_errors = [], []
    for atoms in frames:
        reference_energy, reference_forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = calculator
        energy_errors.append(atoms.get_potential_energy() - reference_energy)
        force_errors.append(atoms.get_forces() - reference_forces)
    energy_rmse = float(np.sqrt(np.mean(np.square(energy_errors))))
    forces_rmse = float(np.sqrt(np.mean(np.square(np.concatenate(force_errors)))))
    assert trained_run["test"]["energy_rmse"] == pytest.approx(energy_rmse, rel=1e-9)
    assert trained_run["test"]["forces_rmse"] == pytest.approx(forces_rmse, rel=1e-9)


def test_resume_from_a_mid_epoch_checkpoint_continues_exactly(
    trained_run: dict, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process twin of the SIGKILL test (tests/test_train_resume.py, slow): a crash in step 12 of 16,
    right after the checkpoint of step 11 (inside the second epoch), then a resume; the result must
    equal the uninterrupted run of ``trained_run`` bitwise."""
    import equimol.train.run as run_module
    import lightning as L
    from test_train_resume import assert_same_training_state

    class Crash(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 12:  # Lightning runs checkpoint callbacks last: step 11 is saved
                raise RuntimeError("simulated crash")

    original = run_module._callbacks
    monkeypatch.setattr(run_module, "_callbacks", lambda *args: [*original(*args), Crash()])
    path = write_tiny_config(shared_data, tmp_path, checkpoint_every_n_steps=1, test_after_fit=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(load_config(path))
    monkeypatch.setattr(run_module, "_callbacks", original)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 11
    train(load_config(path), resume=True)
    resumed = torch.load(last, weights_only=False)
    reference = torch.load(Path(trained_run["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=False)
    assert_same_training_state(resumed, reference)


def test_cli_export_and_eval(trained_run: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``equimol export`` of the best checkpoint equals run_dir/model.pt; ``equimol eval`` on the test file
    reproduces the metrics that training reported (same model, same frames; 1e-9 relative)."""
    from equimol.cli import main

    run_dir = Path(trained_run["run_dir"])
    exported = tmp_path / "exported.pt"
    assert main(["export", str(run_dir / "checkpoints" / "best.ckpt"), str(exported)]) == 0
    assert "EMA weights: True" in capsys.readouterr().out
    reference = load_model(run_dir / "model.pt").state_dict()
    for name, tensor in load_model(exported).state_dict().items():
        assert torch.equal(tensor, reference[name]), name
    json_path, plot_path = tmp_path / "eval.json", tmp_path / "parity.png"
    data = run_dir.parent / "tiny.xyz"
    assert main(["eval", str(exported), str(data), "--json", str(json_path), "--plot", str(plot_path), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "force component" in table and "energy / atom" in table
    metrics = json.loads(json_path.read_text())["metrics"]
    assert metrics == pytest.approx(trained_run["test"], rel=1e-9)
    assert plot_path.stat().st_size > 10_000  # a real PNG with two panels
    # a checkpoint works as MODEL too
    assert (
        main(
            [
                "eval",
                str(run_dir / "checkpoints" / "best.ckpt"),
                str(data),
                "--json",
                str(json_path),
                "--plot",
                str(plot_path),
                "--quiet",
                "--overwrite",
            ]
        )
        == 0
    )
    assert json.loads(json_path.read_text())["metrics"] == pytest.approx(metrics, rel=1e-12)


def test_cli_errors_are_messages(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from equimol.cli import main

    assert main(["eval", str(tmp_path / "missing.pt"), str(tmp_path / "x.xyz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.ckpt"), str(tmp_path / "out.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text("model: {}\n")
    assert main(["train", str(config), "--resume"]) == 2  # config errors come before anything else


def test_stop_before_the_first_validation(shared_data: Path, tmp_path: Path) -> None:
    """max_steps (like max_time) may end a run before any validation: early stopping must not fail, and the
    model is exported from the last checkpoint."""
    path = write_tiny_config(shared_data, tmp_path, max_steps=2, early_stopping_patience=3, test_after_fit=False)
    result = train(load_config(path))
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    assert load_model(result["model"]).species == [1, 6, 7, 8]


def test_resume_without_a_checkpoint_is_an_error(shared_data: Path, tmp_path: Path, capsys) -> None:
    from equimol.cli import main

    path = write_tiny_config(shared_data, tmp_path)
    assert main(["train", str(path), "--resume"]) == 2
    error = capsys.readouterr().err
    assert "--resume: no checkpoint" in error and "last.ckpt" in error
