"""Bad inputs through the real CLI: each ends with exit status 2, one line naming the file or key, no traceback,
and nothing created or changed.

Every case runs in its own process (``tests/cli_runner.py`` imports torch, Lightning and the CLI once and
forks a child per case, two at a time), in its own folder. A case gives the command line and the words
its one-line message must contain (a file name, a key, what to do). The folder's files (names, sizes,
contents) and the statistics cache are compared before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from test_train_e2e import tiny_config, write_tiny_frames
from trust_cases import FILE_SIZE_LIMITS, MAY_CREATE, STARTED, TRUST_CASES

RUNNER = Path(__file__).with_name("cli_runner.py")


# ------------------------------------------------------------------------------------------------ inputs
def xyz(folder: Path, shared: Path, count: int = 6) -> str:
    """``count`` real 3BPA frames as ``tiny.xyz``; returns its name."""
    return write_tiny_frames(shared, folder, count).name


def config(folder: Path, shared: Path, *, model: dict | None = None, data: dict | None = None, **trainer) -> str:
    """The tiny training config as ``tiny.yaml`` (sections updated by the arguments); returns its name."""
    values = tiny_config(shared, folder, **trainer)
    values["model"].update(model or {})
    values["data"].update(data or {})
    (folder / "tiny.yaml").write_text(yaml.safe_dump(values))
    return "tiny.yaml"


def write_atoms(folder: Path, name: str, frames: list[Atoms]) -> str:
    import ase.io

    ase.io.write(folder / name, frames, format="extxyz")
    return name


def labelled(atoms: Atoms, energy: float = -1.0, forces: np.ndarray | None = None) -> Atoms:
    from ase.calculators.singlepoint import SinglePointCalculator

    forces = np.zeros((len(atoms), 3)) if forces is None else forces
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def train_on(folder: Path, shared: Path, frames: list[Atoms], name: str = "bad.xyz") -> list[str]:
    """``equimol train`` of the tiny config with ``frames`` as the training file."""
    write_atoms(folder, name, frames)
    return ["train", config(folder, shared, data={"train": name, "test": None, "val_fraction": 0.2})]


def model_file(folder: Path) -> str:
    from equimol.export import export_model
    from equimol.models import build_model

    model = build_model({"species": ["H", "C"], "channels": 4, "lmax": 1, "num_layers": 1, "avg_num_neighbors": 4.0})
    export_model(model, folder / "model.pt")
    return "model.pt"


def truncated_checkpoint(folder: Path, name: str = "broken.ckpt") -> str:
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "model_config": {}}, folder / name)
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    return name


def lmdb_file(folder: Path, shared: Path, name: str = "data.lmdb") -> str:
    from equimol.datasets.lmdb_dataset import write_lmdb
    from equimol.datasets.readers import read_ase_records

    write_lmdb(read_ase_records(folder / xyz(folder, shared, 3)), folder / name, progress=False)
    (folder / "tiny.xyz").unlink()
    return name


def damaged_lmdb(folder: Path, shared: Path) -> str:
    name = lmdb_file(folder, shared)
    data = bytearray((folder / name).read_bytes())
    data[:8192] = b"\xff" * 8192  # both meta pages
    (folder / name).write_bytes(bytes(data))
    return name


def atoms_without_energy(folder: Path) -> str:
    import ase.db

    with ase.db.connect(folder / "noenergy.db") as db:
        db.write(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))
    return "noenergy.db"


def h2(distance: float = 0.74, **cell) -> Atoms:
    return Atoms("H2", positions=[[0, 0, 0], [0, 0, distance]], **cell)


# ------------------------------------------------------------------------------------------------- cases
# name -> (builder(folder, shared) -> argv, words the message must contain)
Builder = Callable[[Path, Path], list[str]]
CASES: dict[str, tuple[Builder, list[str]]] = {
    # arguments
    "bench_repeats_zero": (lambda f, s: ["bench", "tp", "--repeats", "0"], ["--repeats"]),
    "bench_lmax_too_large": (lambda f, s: ["bench", "tp", "--lmax", "40", "--backends", "cg"], ["--lmax", "40"]),
    "bench_unknown_backend": (lambda f, s: ["bench", "tp", "--backends", "nosuch", "--lmax", "1"], ["nosuch"]),
    "bench_model_unknown_system": (lambda f, s: ["bench", "model", "--systems", "nosuch"], ["nosuch"]),
    "eval_batch_size_zero": (lambda f, s: ["eval", model_file(f), xyz(f, s), "--batch-size", "0"], ["--batch-size"]),
    "stats_negative_cutoff": (lambda f, s: ["data", "stats", xyz(f, s), "--radial-cutoff", "-1"], ["--radial-cutoff"]),
    # the config, checked before any data are read
    "config_missing": (lambda f, s: ["train", "nosuch.yaml"], ["nosuch.yaml"]),
    "config_not_yaml": (lambda f, s: ["train", write_text(f, "bad.yaml", "model: [1,\n")], ["bad.yaml"]),
    "config_unknown_key": (lambda f, s: ["train", config(f, s), "data.trian=x.xyz"], ["data.trian"]),
    "config_batch_size_zero": (lambda f, s: ["train", config(f, s), "data.batch_size=0"], ["data.batch_size"]),
    "config_negative_cutoff": (lambda f, s: ["train", config(f, s), "data.radial_cutoff=-1"], ["radial_cutoff"]),
    "config_negative_lr": (lambda f, s: ["train", config(f, s), "optimizer.lr=-1"], ["optimizer.lr"]),
    "config_run_dir_is_file": (
        lambda f, s: ["train", config(f, s), f"trainer.run_dir={write_text(f, 'taken', 'x')}"],
        ["trainer.run_dir", "taken"],
    ),
    "config_missing_data_file": (lambda f, s: ["train", config(f, s), "data.train=nosuch.xyz"], ["nosuch.xyz"]),
    "config_bad_override": (lambda f, s: ["train", config(f, s), "max_epochs"], ["max_epochs"]),
    "config_unknown_backend": (lambda f, s: ["train", config(f, s), "model.tp_backend=nosuch"], ["model.tp_backend"]),
    "config_negative_val_fraction": (lambda f, s: ["train", config(f, s), "data.val_fraction=-0.1"], ["val_fraction"]),
    # data read during training
    "train_val_fraction_rounds_to_zero": (
        lambda f, s: ["train", config(f, s), "data.val_fraction=0.01"],
        ["val_fraction", "0.01"],
    ),
    "train_empty_train_file": (
        lambda f, s: ["train", config(f, s), f"data.train={write_text(f, 'empty.xyz', '')}"],
        ["empty.xyz"],
    ),
    "train_empty_test_file": (
        lambda f, s: ["train", config(f, s), f"data.test={write_text(f, 'empty.xyz', '')}"],
        ["empty.xyz"],
    ),
    "train_species_lack_element": (lambda f, s: ["train", config(f, s, model={"species": ["H", "C", "N"]})], ["O"]),
    "train_species_lack_element_fixed_keys": (
        lambda f, s: [
            "train",
            config(
                f,
                s,
                model={
                    "species": ["H", "C", "N"],
                    "avg_num_neighbors": 10.0,
                    "e0s": None,
                    "energy_shift": 0.0,
                    "energy_scale": 1.0,
                },
            ),
        ],
        ["model.species", "O"],
    ),
    "train_inf_forces": (
        lambda f, s: train_on(f, s, [labelled(h2(), forces=np.full((2, 3), np.inf)) for _ in range(5)]),
        ["bad.xyz", "frame 0", "forces"],
    ),
    "train_db_without_energy": (
        lambda f, s: ["train", config(f, s), f"data.train={atoms_without_energy(f)}"],
        ["noenergy.db", "energy"],
    ),
    "train_atoms_too_close": (
        lambda f, s: train_on(f, s, [labelled(h2())] * 3 + [labelled(h2(0.01))] + [labelled(h2())]),
        ["bad.xyz", "frame 3", "min_distance"],
    ),
    "train_pathological_cell": (
        lambda f, s: train_on(f, s, [labelled(Atoms("C", cell=np.eye(3) * 0.05, pbc=True))] * 5),
        ["bad.xyz", "frame 0"],
    ),
    "train_resume_without_checkpoint": (lambda f, s: ["train", config(f, s), "--resume"], ["last.ckpt"]),
    "train_into_a_finished_run": (lambda f, s: ["train", *run_folder(f, s)], ["run", "--resume", "--overwrite"]),
    "train_resume_changed_model": (
        lambda f, s: ["train", *run_folder(f, s), "model.channels=8", "data.batch_size=3", "--resume"],
        ["model.channels", "data.batch_size", "config.yaml"],
    ),
    "train_resume_damaged_checkpoint": (
        lambda f, s: ["train", *run_folder(f, s, damaged=True), "--resume"],
        ["last.ckpt", "damaged"],
    ),
    "train_resume_and_overwrite": (
        lambda f, s: ["train", *run_folder(f, s), "--resume", "--overwrite"],
        ["--resume", "--overwrite"],
    ),
    # models and checkpoints
    "eval_missing_model": (lambda f, s: ["eval", "nosuch.pt", xyz(f, s)], ["nosuch.pt"]),
    "eval_garbage_model": (lambda f, s: ["eval", write_text(f, "junk.pt", "junk"), xyz(f, s)], ["junk.pt"]),
    "eval_truncated_checkpoint": (lambda f, s: ["eval", truncated_checkpoint(f), xyz(f, s)], ["broken.ckpt"]),
    "eval_missing_forces_key": (
        lambda f, s: ["eval", model_file(f), xyz(f, s), "--forces-key", "REF_forces"],
        ["tiny.xyz", "REF_forces"],
    ),
    "export_truncated_checkpoint": (
        lambda f, s: ["export", truncated_checkpoint(f), "out.pt"],
        ["broken.ckpt", "checkpoint"],
    ),
    "export_model_file_not_checkpoint": (
        lambda f, s: ["export", model_file(f), "out.pt"],
        ["model.pt", "model file"],
    ),
    "export_missing_checkpoint": (lambda f, s: ["export", "nosuch.ckpt", "out.pt"], ["nosuch.ckpt"]),
    # data commands
    "convert_missing_input": (lambda f, s: ["data", "convert", "nosuch.xyz", "out.lmdb"], ["nosuch.xyz"]),
    "convert_output_exists": (
        lambda f, s: ["data", "convert", xyz(f, s), write_text(f, "out.lmdb", "keep")],
        ["out.lmdb"],
    ),
    "convert_inf_forces": (
        lambda f, s: [
            "data",
            "convert",
            "--quiet",
            write_atoms(f, "inf.xyz", [labelled(h2(), forces=np.full((2, 3), np.inf))]),
            "o.lmdb",
        ],
        ["inf.xyz", "frame 0"],
    ),
    "stats_empty_file": (lambda f, s: ["data", "stats", "--quiet", write_text(f, "empty.xyz", "")], ["empty.xyz"]),
    "stats_damaged_lmdb": (lambda f, s: ["data", "stats", damaged_lmdb(f, s)], ["data.lmdb"]),
    "stats_truncated_lmdb": (lambda f, s: ["data", "stats", truncated_lmdb(f, s)], ["data.lmdb"]),
}


CASES.update(TRUST_CASES)  # issue 31: crafted files, lost or mixed outputs, crashing cells, silent wrongs, tracebacks


def run_folder(folder: Path, shared: Path, damaged: bool = False) -> list[str]:
    """A run folder as ``equimol train`` leaves it (config.yaml, checkpoints/last.ckpt, model.pt); returns
    the config argument."""
    from equimol.train.config import load_config

    name = config(folder, shared)
    run = folder / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(load_config(folder / name).as_dict(), sort_keys=False))
    torch.save({"state_dict": {}, "model_config": {}, "epoch": 1}, run / "checkpoints" / "last.ckpt")
    if damaged:
        truncated_checkpoint(run / "checkpoints", "last.ckpt")
    model_file(run)
    return [name]


# the species check needs the training split's statistics, which are cached (correct and reusable) on the way
STATISTICS_FIRST = {"train_species_lack_element", "train_species_lack_element_fixed_keys"}


def write_text(folder: Path, name: str, text: str) -> str:
    (folder / name).write_text(text)
    return name


def truncated_lmdb(folder: Path, shared: Path) -> str:
    name = lmdb_file(folder, shared)
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 3])
    return name


def snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: sha1}`` of every file under ``folder`` (folders as ``"dir"``)."""
    state = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        state[key] = "dir" if path.is_dir() else hashlib.sha1(path.read_bytes()).hexdigest()
    return state


@pytest.fixture(scope="module")
def outcomes(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Build every case's folder, run all cases (two processes at a time), collect what each left behind."""
    root = tmp_path_factory.mktemp("cli_errors")
    cases, before = [], {}
    for name, (build, _) in CASES.items():
        folder, logs = root / name / "work", root / name / "logs"
        folder.mkdir(parents=True)
        logs.mkdir()
        argv = build(folder, shared_data)
        env = {"EQUIMOL_CACHE_DIR": str(folder / ".cache"), "EQUIMOL_DEBUG": "", "OMP_NUM_THREADS": "1"}
        cases.append(
            {
                "name": name,
                "argv": argv,
                "cwd": str(folder),
                "env": env,
                "stdout": str(logs / "stdout"),
                "stderr": str(logs / "stderr"),
                "timeout": int(os.environ.get("EQUIMOL_CLI_CASE_TIMEOUT", "300")),
                "file_size_limit": FILE_SIZE_LIMITS.get(name, 0),
            }
        )
        before[name] = snapshot(folder)
    (root / "cases.json").write_text(json.dumps(cases))
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(root / "cases.json"), "2"], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    statuses = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        case["name"]: {
            "status": statuses[case["name"]],
            "stderr": Path(case["stderr"]).read_text(),
            "stdout": Path(case["stdout"]).read_text(),
            "before": before[case["name"]],
            "after": snapshot(Path(case["cwd"])),
            "argv": case["argv"],
        }
        for case in cases
    }


def test_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clean_line(name: str, outcomes: dict[str, dict]) -> None:
    outcome = outcomes[name]
    stderr = outcome["stderr"]
    context = f"{name}: equimol {' '.join(outcome['argv'])}\n--- stderr ---\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, context
    lines = [line for line in stderr.splitlines() if line.strip()]
    if name in STARTED:  # Lightning's informational lines come first; the error is the one and last error line
        assert sum(": error: " in line for line in lines) == 1, context
        lines = lines[-1:]
    assert len(lines) == 1, context
    assert outcome["status"] == 2, context
    assert lines[0].startswith("equimol ") and ": error: " in lines[0], context
    for word in CASES[name][1]:
        assert word in lines[0], f"{word!r} missing; {context}"
    after = outcome["after"]
    if name in STATISTICS_FIRST:  # a valid cache entry, keyed by the data files' fingerprint, may appear
        after = {key: value for key, value in after.items() if not key.startswith(".equimol_statistics")}
    assert not [key for key in after if key.endswith(".tmp")], f"temporary files left; {context}"
    before, allowed = outcome["before"], MAY_CREATE.get(name, ())  # a started training may leave its logs
    changed = {key for key in before if after.get(key) != before[key]}
    created = {key for key in after if key not in before and not key.startswith(allowed)}
    assert not changed and not created, f"files created or changed: {sorted(changed | created)}; {context}"


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    """The console script itself, once without and once with ``--debug`` (and once with EQUIMOL_DEBUG=1)."""
    script = str(Path(sys.executable).with_name("equimol"))
    command = [script, "export", str(tmp_path / "nosuch.ckpt"), str(tmp_path / "out.pt")]
    processes = [  # three at once: each imports torch
        subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for arguments, env in (
            (command, os.environ),
            ([*command, "--debug"], os.environ),
            (command, {**os.environ, "EQUIMOL_DEBUG": "1"}),
        )
    ]
    (plain, plain_err), (debug, debug_err), (variable, variable_err) = [
        (process, process.communicate(timeout=600)[1]) for process in processes
    ]
    assert plain.returncode == 2 and plain_err.count("\n") == 1 and "nosuch.ckpt" in plain_err
    for result, stderr in ((debug, debug_err), (variable, variable_err)):
        assert result.returncode == 1 and "Traceback" in stderr and "nosuch.ckpt" in stderr
    assert not (tmp_path / "out.pt").exists()
