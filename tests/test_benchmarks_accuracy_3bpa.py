"""The shared parts of the 3BPA accuracy benchmarks: the split, the error metrics, the job queue, and reports that
regenerate from their committed JSON records exactly."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


@pytest.fixture
def accuracy(monkeypatch):
    """``benchmarks/_accuracy_3bpa.py``, imported as the benchmark scripts import it (their folder on the path)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("_accuracy_3bpa")


def _labels(energy, forces, sizes) -> dict:
    atoms = int(sum(sizes))
    return {"energy": np.array(energy, float), "forces": np.array(forces, float), "sizes": np.array(sizes),
            "numbers": np.ones(atoms, int), "positions": np.arange(3.0 * atoms).reshape(atoms, 3)}  # fmt: skip


def test_errors_are_rmses_in_mev(accuracy):
    reference = _labels([1.0, 2.0], np.zeros((5, 3)), [2, 3])
    forces = np.zeros((5, 3))
    forces[0, 0] = 0.03  # one component of 15 off by 30 meV/Å
    predicted = {**reference, "energy": np.array([1.002, 1.997]), "forces": forces}
    result = accuracy.errors(reference, predicted)
    assert result["frames"] == 2
    assert result["energy_rmse"] == pytest.approx(1e3 * np.sqrt((0.002**2 + 0.003**2) / 2))
    assert result["energy_rmse_per_atom"] == pytest.approx(1e3 * np.sqrt(((0.002 / 2) ** 2 + (0.003 / 3) ** 2) / 2))
    assert result["forces_rmse"] == pytest.approx(30.0 / np.sqrt(15))


def test_errors_refuse_frames_that_do_not_match(accuracy):
    reference = _labels([1.0], np.zeros((2, 3)), [2])
    shuffled = {**reference, "positions": reference["positions"][::-1]}
    with pytest.raises(ValueError, match="do not match"):
        accuracy.errors(reference, shuffled)


def test_the_split_is_seeded_disjoint_and_labelled_for_both_codes(accuracy, shared_data, tmp_path):
    paths = accuracy.prepare_data(shared_data, tmp_path / "a", seed=0, test_limit=3)
    again = accuracy.prepare_data(shared_data, tmp_path / "b", seed=0, test_limit=3)
    other = accuracy.prepare_data(shared_data, tmp_path / "c", seed=1, test_limit=3)
    train, valid = ase.io.read(paths["train"], ":"), ase.io.read(paths["valid"], ":")
    assert (len(train), len(valid)) == (475, 25)
    every = {a.positions.tobytes() for a in ase.io.read(shared_data / "3bpa/train_300K.xyz", ":")}
    seen = [a.positions.tobytes() for a in train + valid]
    assert len(set(seen)) == 500 and set(seen) == every
    assert paths["valid"].read_text() == again["valid"].read_text() != other["valid"].read_text()
    mace = ase.io.read(paths["mace_valid"], ":")
    assert all(m.info["REF_energy"] == a.get_potential_energy() for m, a in zip(mace, valid))
    assert all(np.array_equal(m.arrays["REF_forces"], a.get_forces()) for m, a in zip(mace, valid))
    assert sorted(paths["e0s"]) == [1, 6, 7, 8]
    assert len(ase.io.read(paths["test_600K"], ":")) == 3


def test_one_failed_job_does_not_stop_the_queue(accuracy, capsys):
    done = []

    def work(item):
        if item == "bad:0":
            raise RuntimeError("boom")
        done.append(item)

    result = accuracy.run_queue(["a:0", "bad:0", "b:0", "c:0"], 2, work, poll_s=0.01)
    assert result["failures"] == ["bad:0"] and sorted(done) == ["a:0", "b:0", "c:0"]
    assert result["load_1min"]["min"] <= result["load_1min"]["mean"] <= result["load_1min"]["max"]
    assert "FAILED bad:0: boom" in capsys.readouterr().out


@pytest.mark.parametrize("stem", ["accuracy_vs_mace_3bpa", "accuracy_ablation_3bpa"])
def test_a_committed_report_regenerates_from_its_json(stem, tmp_path):
    """The Markdown report is a function of the committed JSON record; an existing report needs --overwrite."""
    command = [sys.executable, str(BENCHMARKS / f"{stem}.py"), "--report-from", str(BENCHMARKS / f"{stem}.json")]
    subprocess.run([*command, "--out", str(tmp_path / stem)], check=True, capture_output=True, timeout=300)
    assert (tmp_path / f"{stem}.md").read_text() == (BENCHMARKS / f"{stem}.md").read_text()
    assert (tmp_path / f"{stem}.json").read_text() == (BENCHMARKS / f"{stem}.json").read_text()
    again = subprocess.run([*command, "--out", str(tmp_path / stem)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "give --overwrite" in again.stderr


@pytest.mark.parametrize(
    ("script", "arguments", "message"),
    [
        ("learning_curve_3bpa", ["run", "nosuch:0"], "unknown job 'nosuch:0'"),
        ("learning_curve_3bpa", ["run", "mace:0", "--mace-python", "{tmp}/none/python"], "no MACE environment"),
        ("accuracy_vs_mace_3bpa", ["--report-from", "{tmp}/none.json", "--out", "{tmp}/x"], "no such JSON record"),
        ("accuracy_ablation_3bpa", ["--report-from", "{tmp}/none.json", "--out", "{tmp}/x"], "no such JSON record"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_work(script, arguments, message, tmp_path):
    work = ["--work", str(tmp_path / "work")] if script == "learning_curve_3bpa" else []
    arguments = [a.format(tmp=tmp_path) for a in arguments]
    result = subprocess.run([sys.executable, str(BENCHMARKS / f"{script}.py"), *work, *arguments],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
