"""Nothing written is lost or mixed (issue 31): each way a result was lost or mixed before, and the run folders and
model files written before these rules, which still load and resume.

Each test below failed on the code before the change (break-checked once, see the commit message).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from test_train_e2e import tiny_config, write_tiny_frames

from equimol.cli import main
from equimol.export import export_model, load_model, read_model_file
from equimol.models import build_model
from equimol.utils.locks import LockedError, exclusive_lock

OLD_RUN = Path(__file__).with_name("data") / "run_before_trust"


def _tiny_model():
    config = {"species": [1, 6, 7, 8], "channels": 4, "lmax": 1, "num_layers": 1, "avg_num_neighbors": 8.0}
    return build_model({**config, "radial_mlp_hidden": [8], "num_radial_basis": 4})


def _one_line(capsys, code: int, *words: str) -> str:
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error and "Traceback" not in error, error
    for word in words:
        assert word in error, (word, error)
    return error


def _write_config(folder: Path, shared: Path, **trainer) -> Path:
    values = tiny_config(shared, folder, max_epochs=1, test_after_fit=False, **trainer)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(values))
    return folder / "tiny.yaml"


# ------------------------------------------------------------------------------------- outputs and inputs
def test_an_output_that_is_an_input_is_refused(tmp_path, capsys, shared_data) -> None:
    frames = write_tiny_frames(shared_data, tmp_path, 3)
    labels = frames.read_bytes()
    model = export_model(_tiny_model(), tmp_path / "model.pt")
    _one_line(capsys, main(["predict", str(model), str(frames), "--out", str(frames), "--overwrite"]), "input")
    assert frames.read_bytes() == labels  # the DFT labels are still there
    checkpoint = str(shutil.copy(OLD_RUN / "checkpoints" / "last.ckpt", tmp_path / "x.ckpt"))
    before = Path(checkpoint).read_bytes()
    _one_line(capsys, main(["export", checkpoint, checkpoint, "--overwrite"]), "x.ckpt", "input")
    assert Path(checkpoint).read_bytes() == before  # the training checkpoint is not replaced by a model file
    link = tmp_path / "link.xyz"
    link.symlink_to(frames)  # the same file under another name
    _one_line(capsys, main(["predict", str(model), str(frames), "--out", str(link), "--overwrite"]), "input")


def test_an_existing_output_is_replaced_only_with_overwrite(tmp_path, capsys, shared_data) -> None:
    frames = write_tiny_frames(shared_data, tmp_path, 2)
    model = export_model(_tiny_model(), tmp_path / "model.pt")
    out = tmp_path / "out.xyz"
    out.write_text("earlier results\n")
    _one_line(capsys, main(["predict", str(model), str(frames), "--out", str(out), "--quiet"]), "--overwrite")
    assert out.read_text() == "earlier results\n"
    assert main(["predict", str(model), str(frames), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert len(ase.io.read(out, ":")) == 2


def test_export_applies_dtype_and_refuses_device_without_compile(tmp_path, capsys) -> None:
    checkpoint = str(OLD_RUN / "checkpoints" / "last.ckpt")
    assert main(["export", checkpoint, str(tmp_path / "m32.pt"), "--dtype", "float32"]) == 0
    payload = read_model_file(tmp_path / "m32.pt")
    assert payload["dtype"] == "float32" and payload["model_config"]["dtype"] == "float32"
    assert load_model(tmp_path / "m32.pt").dtype == torch.float32  # not silently float64 again
    capsys.readouterr()
    _one_line(
        capsys,
        main(["export", checkpoint, str(tmp_path / "m.pt"), "--device", "cuda"]),
        "--device",
        "--format aotinductor",
    )
    assert not (tmp_path / "m.pt").exists()


def test_convert_refuses_an_output_it_could_not_read_back(tmp_path, capsys, shared_data) -> None:
    frames = write_tiny_frames(shared_data, tmp_path, 2)
    _one_line(capsys, main(["data", "convert", str(frames), str(tmp_path / "out_noext"), "--quiet"]), ".lmdb")
    assert not (tmp_path / "out_noext").exists()


# -------------------------------------------------------------------------------------- predict jobs
def test_a_second_predict_job_with_the_same_out_is_refused(tmp_path, capsys, shared_data) -> None:
    frames = write_tiny_frames(shared_data, tmp_path, 2)
    model = export_model(_tiny_model(), tmp_path / "model.pt")
    out = tmp_path / "out.xyz"
    with exclusive_lock(tmp_path / ".out.xyz.lock", "--out"):  # as the first job holds it while it runs
        code = main(["predict", str(model), str(frames), "--out", str(out), "--quiet"])
        _one_line(capsys, code, "out.xyz", f"pid {os.getpid()}")
    assert not out.exists()
    assert main(["predict", str(model), str(frames), "--out", str(out), "--quiet"]) == 0  # the lock went with it
    assert not list(tmp_path.glob(".out.xyz*"))  # no lock, part or temporary file left


def test_a_failed_process_of_a_two_process_predict_leaves_out_as_it_was(tmp_path, shared_data) -> None:
    """Frame 3 (process 1 of 2) has an element the model lacks: process 0 must not replace the good --out."""
    frames = ase.io.read(write_tiny_frames(shared_data, tmp_path, 4), ":")
    frames[3].numbers[0] = 79  # gold
    ase.io.write(tmp_path / "bad.xyz", frames, format="extxyz")
    model = export_model(_tiny_model(), tmp_path / "model.pt")
    out = tmp_path / "out.xyz"
    out.write_text("good results of an earlier job\n")
    command = [str(Path(sys.executable).with_name("equimol")), "predict", str(model), str(tmp_path / "bad.xyz")]
    command += ["--out", str(out), "--num-processes", "2", "--batch-size", "1", "--quiet", "--overwrite"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("equimol predict: error:")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(errors) == 1 and "process 1 of 2" in errors[0] and "bad.xyz:3" in errors[0], result.stderr[-3000:]
    assert out.read_text() == "good results of an earlier job\n"
    assert not list(tmp_path.glob(".out.xyz*"))


# ---------------------------------------------------------------------------------------- run folders
def test_a_run_folder_in_use_is_refused_naming_the_owner(tmp_path, capsys, shared_data) -> None:
    config = _write_config(tmp_path, shared_data)
    (tmp_path / "run").mkdir()
    with exclusive_lock(tmp_path / "run" / ".equimol.lock", "run"):  # what a running `equimol train` holds
        _one_line(capsys, main(["train", str(config)]), "trainer.run_dir", "in use", f"pid {os.getpid()}")
    assert list((tmp_path / "run").iterdir()) == []


def test_the_lock_of_a_killed_process_is_released(tmp_path) -> None:
    """flock, not a pid file: SIGKILL leaves the lock file, but not the lock."""
    holder = textwrap.dedent(
        f"""
        import sys, time
        from equimol.utils.locks import exclusive_lock
        with exclusive_lock({str(tmp_path / "lock")!r}, "x"):
            print("locked", flush=True)
            time.sleep(600)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=f"pid {process.pid}"):
            with exclusive_lock(tmp_path / "lock", "x"):
                pass
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    with exclusive_lock(tmp_path / "lock", "x"):
        pass


def test_a_failed_start_leaves_the_folder_reusable(tmp_path, capsys, shared_data) -> None:
    """A start that failed after writing config.yaml and logs, before any checkpoint: the corrected command runs."""
    config = _write_config(tmp_path, shared_data)
    run = tmp_path / "run"
    (run / "csv" / "version_0").mkdir(parents=True)
    (run / "csv" / "version_0" / "metrics.csv").write_text("epoch\n")
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"channels": 99}}))
    _one_line(capsys, main(["train", str(config), "--resume"]), "no checkpoint", "without --resume")
    assert main(["train", str(config)]) == 0
    assert (run / "model.pt").is_file() and not (run / "csv" / "version_0" / "metrics.csv").read_text() == "epoch\n"
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["channels"] == 4


def _fake_run(folder: Path) -> None:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"x")
    export_model(_tiny_model(), folder / "model.pt")


def test_committees_and_single_runs_never_share_a_folder(tmp_path, capsys, shared_data) -> None:
    config = _write_config(tmp_path, shared_data)
    _fake_run(tmp_path / "run")  # a single run ...
    for extra in ([], ["--overwrite"]):  # ... does not take a committee, even with --overwrite
        code = main(["train", str(config), "trainer.committee_seeds=[1,2]", *extra])
        _one_line(capsys, code, "holds a single run")
    assert (tmp_path / "run" / "model.pt").is_file() and not list((tmp_path / "run").glob("member_*"))
    shutil.rmtree(tmp_path / "run")
    _fake_run(tmp_path / "run" / "member_1")  # a committee ...
    for extra in ([], ["--overwrite"]):  # ... does not take a single run
        _one_line(capsys, main(["train", str(config), *extra]), "holds a committee", "member_1")
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_overwriting_a_committee_with_other_seeds_removes_the_old_members(tmp_path, shared_data) -> None:
    config = _write_config(tmp_path, shared_data)
    for seed in (1, 2):
        _fake_run(tmp_path / "run" / f"member_{seed}")
    assert main(["train", str(config), "trainer.committee_seeds=[3]", "--overwrite"]) == 0
    members = sorted(path.name for path in (tmp_path / "run").iterdir() if path.name.startswith("member_"))
    assert members == ["member_3"]
    assert yaml.safe_load((tmp_path / "run" / "committee.yaml").read_text())["trainer"]["committee_seeds"] == [3]
    assert main(["train", str(config), "trainer.committee_seeds=[3,4]", "--resume"]) == 2  # other seeds: refused


# -------------------------------------------------------------------------- written before these rules
def test_a_run_folder_written_before_these_rules_still_loads_and_resumes(tmp_path, shared_data) -> None:
    """tests/data/run_before_trust: a 2-epoch run of the tiny config, written by commit 01dde1e."""
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    old_model = load_model(run / "model.pt")  # no weights_sha256: loads, checked by its zip CRCs
    assert "weights_sha256" not in torch.load(run / "model.pt", weights_only=True)
    values = tiny_config(shared_data, tmp_path, max_epochs=3, test_after_fit=False)
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    recorded["data"].update(
        data_dir=values["data"]["data_dir"], element_references=values["data"]["element_references"]
    )
    recorded["trainer"]["run_dir"] = str(run)
    (run / "config.yaml").write_text(yaml.safe_dump(recorded, sort_keys=False))
    values["data"] = recorded["data"]
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(values))
    assert main(["train", str(tmp_path / "tiny.yaml"), "--resume"]) == 0
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["epoch"] == 2  # resumed after the old run's two epochs, to the third
    new_model = load_model(run / "model.pt")
    atoms = Atoms("CH4", positions=np.random.default_rng(0).normal(scale=1.2, size=(5, 3)))
    from equimol.calculator import EquimolCalculator

    energies = []
    for model in (old_model, new_model):
        atoms.calc = EquimolCalculator(model)
        energies.append(atoms.get_potential_energy())
    assert np.isfinite(energies).all() and energies[0] != energies[1]


def test_temporary_files_of_killed_writers_are_removed_by_the_next_write(tmp_path, capsys, shared_data) -> None:
    from equimol.utils.io import atomic_write

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".report.json.{int(dead.stdout)}.0badc0de.tmp"  # a writer killed mid-write
    live = tmp_path / f".report.json.{os.getpid()}.0badc0de.tmp"  # a writer still running: kept
    stale.write_text("half")
    live.write_text("half")
    with atomic_write(tmp_path / "report.json", "w") as handle:
        handle.write("{}")
    assert not stale.exists() and live.exists()
    frames = write_tiny_frames(shared_data, tmp_path, 2)
    model = export_model(_tiny_model(), tmp_path / "model.pt")
    (tmp_path / ".out.xyz.parts-0badc0de").mkdir()  # the part folder of a killed predict job
    assert main(["predict", str(model), str(frames), "--out", str(tmp_path / "out.xyz"), "--quiet"]) == 0
    assert not list(tmp_path.glob(".out.xyz*"))
