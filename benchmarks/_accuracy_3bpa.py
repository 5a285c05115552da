"""What the 3BPA accuracy benchmarks share (``accuracy_vs_mace_3bpa``, ``learning_curve_3bpa``,
``accuracy_ablation_3bpa``): the data split, training jobs, testing model files, the job queue, the report files.

* **Data** (:func:`prepare_data`): ``3bpa/train_300K.xyz`` split once (seeded) into 475 training and 25
  validation frames (``valid_fraction`` 0.05), written to ``WORK/data`` and given to both codes as files, so both
  train and validate on the same frames. The MACE copies carry ``REF_energy``/``REF_forces`` (MACE's keys; it
  would rewrite ``energy``/``forces`` itself, with a warning, under ASE >= 3.23). The isolated-atom energies of
  ``3bpa/iso_atoms.xyz`` are both codes' E0s.
* **Jobs** ``CODE:SEED`` (:func:`train_job`), each in ``WORK/<code>_seed<seed>/``: ``mace`` is MACE 0.3.16
  "small" (:data:`MACE_SMALL`, ``mace_run_train``); any other code is ``equimol train`` of a config with that
  code's overrides. Both run through ``_accuracy_3bpa_workers.py``, which records every validation in
  ``curve.jsonl``, imposes the CPU-time budget on MACE and saves MACE's snapshots (equimol has
  ``trainer.max_cpu_time`` and ``trainer.snapshot_cpu_times``). The budget is CPU seconds of the training
  process from its first batch, so a loaded machine stretches a run but does not shorten it; early stopping is
  off on both sides (MACE's ``--patience=100000``), so the budget ends every run. One torch thread,
  ``nice -n 5``, an emptied Inductor cache of its own (every equimol run pays its whole compilation). An
  interrupted equimol job continues from its last checkpoint (CPU clock, data order and snapshots included);
  MACE cannot continue its clock, so a MACE job starts over.
* **Tests** (:func:`test_job`): each snapshot (EMA weights at a CPU time) and optionally the model each code
  ships (best on validation, EMA weights) is predicted by its own code's tool (``equimol predict``,
  ``mace_eval_configs``); :func:`errors` computes every RMSE from the predicted and reference arrays.
* **Queue** (:func:`run_queue`): jobs ``parallel`` at a time; one failed job does not stop the others.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import ase.io
import numpy as np
from _common import ROOT, equimol_command, fail, write_json

CONFIG = ROOT / "configs" / "3bpa_quick.yaml"
WORKERS = Path(__file__).resolve().with_name("_accuracy_3bpa_workers.py")
MACE_PYTHON = ROOT / ".venv-mace/bin/python"  # made by benchmarks/accuracy_vs_mace_3bpa.sh --setup-only
TESTS = ("test_300K", "test_600K")
SIDES = {"equimol": "main", "mace": "mace"}  # the two sides of a comparison -> their job codes
#: MACE "small" (the issue's reference): run_train arguments besides data, E0s, seed and folders.
MACE_SMALL = [
    "--model=MACE", "--hidden_irreps=32x0e + 32x1o", "--num_interactions=2", "--correlation=3",
    "--max_ell=3", "--r_max=5.0", "--num_radial_basis=8", "--num_cutoff_basis=5", "--radial_MLP=[64, 64, 64]",
    "--default_dtype=float32", "--device=cpu", "--batch_size=5", "--valid_batch_size=20", "--lr=0.01",
    "--amsgrad", "--ema", "--ema_decay=0.99", "--loss=weighted", "--energy_weight=1.0", "--forces_weight=100.0",
    "--scheduler=ReduceLROnPlateau", "--lr_factor=0.8", "--scheduler_patience=5", "--clip_grad=10.0",
    "--max_num_epochs=100000", "--patience=100000", "--eval_interval=1", "--error_table=PerAtomRMSE",
    "--save_cpu", "--plot=False", "--pin_memory=False",
]  # fmt: skip


def add_job_arguments(parser: argparse.ArgumentParser, budget: float) -> None:
    """The options of every job-running command: budget, test subset, the MACE environment, the data."""
    parser.add_argument("--budget", type=float, default=budget, help=f"CPU seconds of training (default {budget:g})")
    parser.add_argument("--test-limit", type=int, help="first N frames of each test set only (dry runs)")
    parser.add_argument("--mace-python", type=Path, default=MACE_PYTHON, help="python of the MACE environment")


def check_mace_python(python: Path) -> None:
    """Stop (exit 2, one line) if the MACE environment's python is missing."""
    if not Path(python).is_file():
        fail(f"{python}: no MACE environment (bash benchmarks/accuracy_vs_mace_3bpa.sh --setup-only, or --mace-python)")


def frames_text(path: Path) -> list[str]:
    """The frames of an extended-XYZ file as their verbatim text blocks."""
    lines, frames, start = path.read_text().splitlines(keepends=True), [], 0
    while start < len(lines):
        end = start + 2 + int(lines[start])
        frames.append("".join(lines[start:end]))
        start = end
    return frames


def prepare_data(data_dir: Path, work: Path, seed: int, test_limit: int | None) -> dict:
    """Write the train/validation split (equimol and MACE copies) and test subsets to ``work/data``; their paths."""
    folder = work / "data"
    folder.mkdir(parents=True, exist_ok=True)
    frames = frames_text(data_dir / "3bpa/train_300K.xyz")
    order = np.random.default_rng(seed).permutation(len(frames))
    n_valid = int(round(0.05 * len(frames)))
    paths: dict = {"e0s": {}}
    for split, indices in (("valid", np.sort(order[:n_valid])), ("train", np.sort(order[n_valid:]))):
        paths[split] = folder / f"{split}.xyz"
        paths[split].write_text("".join(frames[i] for i in indices))
        copies = ase.io.read(paths[split], ":")
        for atoms in copies:
            atoms.info["REF_energy"] = atoms.get_potential_energy()
            atoms.arrays["REF_forces"] = atoms.get_forces()
            atoms.calc = None
        paths[f"mace_{split}"] = folder / f"mace_{split}.xyz"
        ase.io.write(paths[f"mace_{split}"], copies, format="extxyz")
    for atoms in ase.io.read(data_dir / "3bpa/iso_atoms.xyz", ":"):
        paths["e0s"][int(atoms.numbers[0])] = float(atoms.get_potential_energy())
    for name in TESTS:
        paths[name] = data_dir / f"3bpa/{name}.xyz"
        if test_limit is not None:
            paths[name] = folder / f"{name}_first{test_limit}.xyz"
            paths[name].write_text("".join(frames_text(data_dir / f"3bpa/{name}.xyz")[:test_limit]))
    return paths


def one_thread_env(inductor_cache: Path | None = None) -> dict[str, str]:
    """The environment of a one-thread run; with ``inductor_cache``, a cold compile: that folder is emptied
    and holds both Inductor's cache and TMPDIR (Inductor keeps its precompiled headers under TMPDIR, not
    under TORCHINDUCTOR_CACHE_DIR, so a shared TMPDIR would make a second run's compile warmer)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if inductor_cache is None:
        return env
    shutil.rmtree(inductor_cache, ignore_errors=True)
    (inductor_cache / "tmp").mkdir(parents=True)
    return {**env, "TORCHINDUCTOR_CACHE_DIR": str(inductor_cache), "TMPDIR": str(inductor_cache / "tmp")}


def job_folder(work: Path, job: str) -> Path:
    return work / job.replace(":", "_seed")


def shipped_model(work: Path, job: str) -> Path:
    """The model file a job's code ships at the end (the best on validation, EMA weights)."""
    folder = job_folder(work, job)
    return folder / "mace_small.model" if job.startswith("mace:") else folder / "run" / "model.pt"


def train_command(job: str, args: argparse.Namespace, paths: dict, overrides: list[str], snapshots: list[float],
                  split_seed: int) -> list[str]:  # fmt: skip
    """The training command line of ``job`` (through the workers module, which records the curve)."""
    code, seed = job.split(":")
    folder, times = job_folder(args.work, job), ",".join(f"{t:g}" for t in snapshots)
    nice = ["nice", "-n", "5"]
    if code == "mace":
        mace = [
            "--name=mace_small", f"--seed={seed}", *MACE_SMALL, f"--E0s={paths['e0s']}",
            f"--train_file={paths['mace_train']}", f"--valid_file={paths['mace_valid']}",
            "--energy_key=REF_energy", "--forces_key=REF_forces", f"--work_dir={folder}", f"--model_dir={folder}",
            f"--log_dir={folder / 'logs'}", f"--checkpoints_dir={folder / 'checkpoints'}",
            f"--results_dir={folder / 'results'}",
        ]  # fmt: skip
        shots = [f"--snapshots={times}", f"--snapshot-dir={folder / 'snapshots'}"] if snapshots else []
        return [*nice, str(args.mace_python), str(WORKERS), "mace-train", f"--budget={args.budget}",
                f"--curve={folder / 'curve.jsonl'}", *shots, "--", *mace]  # fmt: skip
    equimol = [
        "trainer.max_time=null", f"trainer.max_cpu_time={args.budget}", "trainer.early_stopping_patience=null",
        f"trainer.run_dir={folder / 'run'}", "trainer.progress_bar=false", "trainer.test_after_fit=false",
        "trainer.num_threads=1", f"trainer.seed={seed}", f"model.seed={seed}", f"data.seed={split_seed}",
        f"data.data_dir={args.data_dir.resolve()}", f"data.train={paths['train']}", f"data.val={paths['valid']}",
        "data.val_fraction=0.0", "data.test=null", *([f"trainer.snapshot_cpu_times=[{times}]"] if snapshots else []),
        *overrides,
    ]  # fmt: skip
    resume = ["--resume"] if (folder / "run" / "checkpoints" / "last.ckpt").exists() else []
    return [*nice, sys.executable, str(WORKERS), "equimol-train", str(folder / "curve.jsonl"), "--",
            "train", str(args.config), *equimol, *resume]  # fmt: skip


def run_logged(command: list[str], log: Path, env: dict[str, str]) -> dict:
    """Run ``command`` with its output in ``log``: exit status, CPU seconds (rusage of the process and the children
    it waited for), wall seconds, and the 1-minute load average at its start and end."""
    start, load_start = time.time(), os.getloadavg()[0]
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    return {"exit_status": os.waitstatus_to_exitcode(status), "cpu_s": usage.ru_utime + usage.ru_stime,
            "wall_s": time.time() - start, "load": [load_start, os.getloadavg()[0]]}  # fmt: skip


def train_job(job: str, args: argparse.Namespace, paths: dict, overrides: list[str], snapshots: list[float],
              split_seed: int = 0) -> dict:  # fmt: skip
    """Train ``job`` (see the module docstring); its record, with the validation curve and an empty snapshot list.

    ``args`` holds ``work``, ``budget``, ``config``, ``data_dir`` and ``mace_python``; ``overrides`` are the
    equimol config's (recorded), ``split_seed`` the seed of the split that ``paths`` holds (``data.seed``).
    """
    folder = job_folder(args.work, job)
    code, seed = job.split(":")
    if code == "mace" and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    command = train_command(job, args, paths, overrides, snapshots, split_seed)
    run = run_logged(command, folder / "train.log", one_thread_env(folder / "inductor_cache"))
    if run["exit_status"] != 0:
        tail = (folder / "train.log").read_text().splitlines()[-15:]
        raise RuntimeError(f"{job} failed (exit {run['exit_status']}):\n" + "\n".join(tail))
    curve = [json.loads(line) for line in (folder / "curve.jsonl").read_text().splitlines()]
    return {
        "job": job, "code": code, "seed": int(seed), "budget_cpu_s": args.budget, "overrides": overrides,
        "train_wall_s": run["wall_s"], "process_cpu_s": run["cpu_s"], "load_1min_start_end": run["load"],
        "validations": [r for r in curve if "event" not in r],
        "fit_end": next((r for r in curve if r.get("event") == "fit_end"), None), "snapshots": [], "command": command,
    }  # fmt: skip


def labels(path: Path, energy_key: str | None = None, forces_key: str | None = None) -> dict[str, np.ndarray]:
    """Energies (n,) eV, forces (atoms, 3) eV/Å, sizes (n,), numbers and positions of a file's frames.

    Without keys, the labels are what ASE's calculator of the frame holds (``energy=``/``forces`` columns).
    """
    frames = ase.io.read(path, ":")
    return {
        "energy": np.array([a.info[energy_key] if energy_key else a.get_potential_energy() for a in frames]),
        "forces": np.concatenate([a.arrays[forces_key] if forces_key else a.get_forces() for a in frames]),
        "sizes": np.array([len(a) for a in frames]),
        "numbers": np.concatenate([a.numbers for a in frames]),
        "positions": np.concatenate([a.positions for a in frames]),
    }


def errors(reference: dict[str, np.ndarray], predicted: dict[str, np.ndarray]) -> dict[str, float]:
    """RMSEs of predicted against reference labels (both from :func:`labels`), in meV units.

    ``energy_rmse_per_atom`` = sqrt(mean_s((E_pred - E_ref)_s / N_s)^2) meV/atom; ``energy_rmse`` the same
    per structure (meV); ``forces_rmse`` = sqrt of the mean over all atoms and Cartesian components of
    (F_pred - F_ref)^2, meV/Å (the per-component convention of MACE's and equimol's logs).
    """
    same = np.array_equal(reference["numbers"], predicted["numbers"]) and np.allclose(
        reference["positions"], predicted["positions"], atol=1e-5
    )
    if not same:
        raise ValueError("predicted frames do not match the reference frames (order, species or positions)")
    energy = predicted["energy"] - reference["energy"]
    force = predicted["forces"] - reference["forces"]
    return {
        "frames": int(len(energy)),
        "energy_rmse_per_atom": 1e3 * float(np.sqrt(np.mean((energy / reference["sizes"]) ** 2))),
        "energy_rmse": 1e3 * float(np.sqrt(np.mean(energy**2))),
        "forces_rmse": 1e3 * float(np.sqrt(np.mean(force**2))),
    }


def test_model(code: str, model: Path, paths: dict, folder: Path, mace_python: Path) -> dict[str, dict]:
    """:func:`errors` of ``model`` on both test sets, predicted (one thread) by the tool of ``code``'s side."""
    tests = {}
    for name in TESTS:
        out = folder / f"predicted_{model.stem}_{name}.xyz"
        if code == "mace":
            command = [str(mace_python.with_name("mace_eval_configs")), "--configs", str(paths[name]), "--model",
                       str(model), "--output", str(out), "--default_dtype", "float32", "--batch_size", "20",
                       "--device", "cpu"]  # fmt: skip
        else:
            command = [equimol_command(), "predict", str(model), str(paths[name]), "--out", str(out),
                       "--batch-size", "20", "--quiet"]  # fmt: skip
        subprocess.run(command, check=True, env=one_thread_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = ase.io.read(out, index=0)  # equimol writes equimol_* keys, or plain ones in older versions
        keys = ("MACE_energy", "MACE_forces") if code == "mace" else ("equimol_energy", "equimol_forces")
        tests[name] = errors(labels(paths[name]), labels(out, *keys) if keys[0] in first.info else labels(out))
        out.unlink()
    return tests


def snapshot_steps(code: str, model: Path) -> int:
    """Optimizer steps made before the snapshot ``model`` was taken."""
    if code == "mace":
        return json.loads((model.parent / "steps.json").read_text())[model.stem.rsplit("_cpu", 1)[1]]
    from equimol.export import read_model_file

    return int(read_model_file(model)["metadata"]["global_step"])


def test_job(record: dict, args: argparse.Namespace, paths: dict, snapshots: list[float], final: bool = False) -> dict:
    """Test the snapshots of a job's ``record`` that exist (and, if ``final``, the model its code ships) on both
    test sets; write the record to the job's ``results.json`` and return it."""
    code, folder = record["code"], job_folder(args.work, record["job"])
    for cpu_s in snapshots:
        model = folder / (f"snapshots/mace_small_cpu{cpu_s:g}.model" if code == "mace" else
                          f"run/snapshots/model_cpu{cpu_s:g}.pt")  # fmt: skip
        if model.exists():  # else the job stopped before this CPU time
            tests = test_model(code, model, paths, folder, args.mace_python)
            record["snapshots"].append({"cpu_s": cpu_s, "steps": snapshot_steps(code, model), **tests})
    if final:
        record["final"] = test_model(code, shipped_model(args.work, record["job"]), paths, folder, args.mace_python)
    (folder / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def run_queue(items: list, parallel: int, work: Callable[[object], object], poll_s: float = 5.0) -> dict:
    """``work(item)`` for every item, ``parallel`` at a time (threads); a failure is printed and skipped.

    Returns the failed items and the 1-minute load average sampled every ``poll_s`` seconds meanwhile.
    """
    pending, lock, failures, loads = list(items), threading.Lock(), [], []

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                item = pending.pop(0)
            print(f"{time.strftime('%H:%M:%S')} start {item}", flush=True)
            try:
                work(item)
                print(f"{time.strftime('%H:%M:%S')} done {item}", flush=True)
            except Exception as error:  # noqa: BLE001 - one failed job must not stop the others
                failures.append(item)
                print(f"{time.strftime('%H:%M:%S')} FAILED {item}: {error}", flush=True)

    threads = [threading.Thread(target=worker) for _ in range(max(1, parallel))]
    for thread in threads:
        thread.start()
    while alive := [thread for thread in threads if thread.is_alive()]:
        loads.append(os.getloadavg()[0])
        alive[0].join(poll_s)
    loads = loads or [os.getloadavg()[0]]
    return {"failures": failures, "load_1min": {"mean": statistics.fmean(loads), "min": min(loads), "max": max(loads)}}


def versions(mace_python: Path) -> dict:
    """Machine and software of both environments, and the equimol commit."""
    from equimol.utils.machine import describe_machine

    probe = "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in ('torch', 'e3nn', %r)}))"
    mace = subprocess.run([str(mace_python), "-c", probe % "mace-torch"], capture_output=True, text=True, check=True)
    ours = subprocess.run([sys.executable, "-c", probe % "equimol"], capture_output=True, text=True, check=True)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return {
        "machine": describe_machine("cpu"), "equimol_env": json.loads(ours.stdout),
        "mace_env": json.loads(mace.stdout), "equimol_commit": commit.stdout.strip(),
    }  # fmt: skip


def subplots(rows: int, columns: int, **options):
    """A matplotlib figure and its axes (the Agg back end: files only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, columns, **options)


def save_report(stem: Path, record: dict, lines: list[str], plot: Callable[[Path], None] | None = None) -> None:
    """Write ``stem.json`` (``record``), ``stem.png`` (by ``plot``, if given) and ``stem.md`` (``lines``)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_json(stem, record)
    if plot is not None:
        plot(Path(f"{stem}.png"))
    Path(f"{stem}.md").write_text("\n".join(lines))
    print(Path(f"{stem}.md").read_text())
