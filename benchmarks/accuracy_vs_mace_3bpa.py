"""Side-by-side accuracy of equimol's main-job config and MACE "small" on 3BPA, for the same CPU-time budget.

Run through ``benchmarks/accuracy_vs_mace_3bpa.sh`` (which sets up both virtual environments)::

    bash benchmarks/accuracy_vs_mace_3bpa.sh [--budget 540] [--seed 0] [--timing] [section.key=value ...]

Steps, each recorded in ``--out``.json/.md/.png (default ``benchmarks/accuracy_vs_mace_3bpa``):

1. **Data.** ``3bpa/train_300K.xyz`` is split once (seeded) into 475 training and 25 validation
   frames (``valid_fraction`` 0.05), written to ``--work``/data and given to both codes as files, so
   both train and validate on the same frames. The MACE copies carry ``REF_energy``/``REF_forces``
   (MACE's keys; it would rewrite ``energy``/``forces`` itself, with a warning, under ASE >= 3.23).
   The isolated-atom energies of ``3bpa/iso_atoms.xyz`` are both codes' E0s.
2. **Training, at the same time, one torch thread each** (``OMP_NUM_THREADS=1``, ``nice -n 5``):
   equimol runs ``equimol train configs/3bpa_quick.yaml`` with ``trainer.max_cpu_time=BUDGET``
   (``max_time`` off) and any overrides given here; MACE runs ``mace_run_train`` with the "small"
   settings of ``MACE_SMALL`` under the same CPU-time budget, imposed without modifying MACE by
   ``benchmarks/accuracy_vs_mace_3bpa_workers.py`` (see its docstring). The budget is CPU seconds
   of each training process from its first training batch, not wall time: the machine is shared,
   and CPU time is what each job used itself.
   Each code validates after every epoch (also after the last, partial one) and ships its best
   model on validation, with EMA weights.
3. **Test.** Each side predicts ``test_300K`` and ``test_600K`` with its own tool (``equimol predict``,
   ``mace_eval_configs``); :func:`errors` computes all RMSEs from the predicted and reference arrays.
4. **Learning curves**: validation force RMSE against CPU and wall seconds of training, recorded
   by each training process at every validation (the workers module).
5. ``--timing``: energy+forces through each code's ASE calculator (a 3BPA molecule; 36 molecules in a
   periodic box, 972 atoms), 1 and 2 threads, two worker processes asked in turn (interleaved).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import ase
import ase.io
import numpy as np
from _common import equimol_command, markdown_table
from accuracy_vs_mace_3bpa_workers import MACE_PYTHON, PYTHON, ROOT, WORKERS, run_timing

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


def frames_text(path: Path) -> list[str]:
    """The frames of an extended-XYZ file as their verbatim text blocks."""
    lines, frames, start = path.read_text().splitlines(keepends=True), [], 0
    while start < len(lines):
        end = start + 2 + int(lines[start])
        frames.append("".join(lines[start:end]))
        start = end
    return frames


def prepare_data(data_dir: Path, work: Path, seed: int, test_limit: int | None) -> dict:
    """Write the shared train/validation split (equimol and MACE copies) and test subsets; see step 1."""
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
    for name in ("test_300K", "test_600K"):
        paths[name] = data_dir / f"3bpa/{name}.xyz"
        if test_limit is not None:
            paths[name] = folder / f"{name}_first{test_limit}.xyz"
            paths[name].write_text("".join(frames_text(data_dir / f"3bpa/{name}.xyz")[:test_limit]))
    return paths


def train_commands(args: argparse.Namespace, paths: dict) -> dict[str, list[str]]:
    """The two training command lines, each through the workers module in its own environment."""
    work = args.work.resolve()
    equimol = [
        "trainer.max_time=null", f"trainer.max_cpu_time={args.budget}", f"trainer.run_dir={work / 'equimol'}",
        "trainer.progress_bar=false", "trainer.test_after_fit=false", "trainer.num_threads=1",
        f"trainer.seed={args.seed}", f"model.seed={args.seed}", f"data.seed={args.seed}",
        f"data.data_dir={args.data_dir.resolve()}", f"data.train={paths['train']}", f"data.val={paths['valid']}",
        "data.val_fraction=0.0", "data.test=null", *args.overrides,
    ]  # fmt: skip
    mace = [
        "--name=mace_small", f"--seed={args.seed}", *MACE_SMALL, f"--E0s={paths['e0s']}",
        f"--train_file={paths['mace_train']}", f"--valid_file={paths['mace_valid']}",
        "--energy_key=REF_energy", "--forces_key=REF_forces", f"--work_dir={work / 'mace'}",
        f"--model_dir={work / 'mace'}", f"--log_dir={work / 'mace/logs'}",
        f"--checkpoints_dir={work / 'mace/checkpoints'}", f"--results_dir={work / 'mace/results'}",
    ]  # fmt: skip
    nice = ["nice", "-n", "5"]
    return {
        "equimol": [*nice, str(PYTHON), str(WORKERS), "equimol-train", str(work / "equimol_curve.jsonl"), "--",
                    "train", str(args.config), *equimol],
        "mace": [*nice, str(MACE_PYTHON), str(WORKERS), "mace-train", f"--budget={args.budget}",
                 f"--curve={work / 'mace_curve.jsonl'}", "--", *mace],
    }  # fmt: skip


def one_thread_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_side_by_side(commands: dict[str, list[str]], work: Path, poll_s: float = 5.0) -> dict:
    """Start the commands at the same time (logs in ``work/<name>.log``); wait, sampling the load average."""
    start, loads, processes, status = time.perf_counter(), [], {}, {}
    for name, command in commands.items():
        with open(work / f"{name}.log", "w") as log:
            processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=one_thread_env())
    while len(status) < len(processes):
        time.sleep(poll_s)
        loads.append(os.getloadavg()[0])
        for name, process in processes.items():
            if name not in status and process.poll() is not None:
                status[name] = {"returncode": process.returncode, "wall_s": time.perf_counter() - start}
    for name, result in status.items():
        if result["returncode"] != 0:
            tail = (work / f"{name}.log").read_text().splitlines()[-15:]
            raise RuntimeError(f"{name} failed (exit {result['returncode']}):\n" + "\n".join(tail))
    return {"processes": status, "load_1min": {"mean": statistics.fmean(loads), "min": min(loads), "max": max(loads)}}


def read_curve(path: Path) -> dict:
    """Validation records and the end-of-fit record of a curve file."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return {
        "validations": [r for r in records if "event" not in r],
        "fit_end": next((r for r in records if r.get("event") == "fit_end"), None),
        "process_cpu_s": next((r["process_cpu_s"] for r in records if r.get("event") == "exit"), None),
    }


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


def evaluate(work: Path, paths: dict) -> dict:
    """Both sides predict both test sets (one thread each, at the same time); :func:`errors` of each."""
    outputs, commands = {}, {}
    for name in ("test_300K", "test_600K"):
        for side in ("equimol", "mace"):
            outputs[side, name] = work / f"predicted_{side}_{name}.xyz"
        commands[f"predict_equimol_{name}"] = [
            equimol_command(), "predict", str(work / "equimol/model.pt"), str(paths[name]),
            "--out", str(outputs["equimol", name]), "--batch-size", "20", "--quiet"]  # fmt: skip
        commands[f"predict_mace_{name}"] = [
            str(ROOT / ".venv-mace/bin/mace_eval_configs"), "--configs", str(paths[name]),
            "--model", str(work / "mace/mace_small.model"), "--output", str(outputs["mace", name]),
            "--default_dtype", "float32", "--batch_size", "20", "--device", "cpu"]  # fmt: skip
    for pair in (
        ("predict_equimol_test_300K", "predict_mace_test_300K"),
        ("predict_equimol_test_600K", "predict_mace_test_600K"),
    ):
        run_side_by_side({name: commands[name] for name in pair}, work, poll_s=1.0)
    result: dict = {"equimol": {}, "mace": {}}
    for name in ("test_300K", "test_600K"):
        reference = labels(paths[name])
        result["equimol"][name] = errors(reference, labels(outputs["equimol", name]))
        result["mace"][name] = errors(reference, labels(outputs["mace", name], "MACE_energy", "MACE_forces"))
    return result


def versions() -> dict:
    """Machine and software of both environments, and the equimol commit."""
    from equimol.utils.machine import describe_machine

    probe = (
        "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in ('torch', 'e3nn', '%s')}))"
    )
    mace = subprocess.run([str(MACE_PYTHON), "-c", probe % "mace-torch"], capture_output=True, text=True, check=True)
    ours = subprocess.run([str(PYTHON), "-c", probe % "equimol"], capture_output=True, text=True, check=True)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return {
        "machine": describe_machine("cpu"), "equimol_env": json.loads(ours.stdout),
        "mace_env": json.loads(mace.stdout), "equimol_commit": commit.stdout.strip(),
    }  # fmt: skip


def plot(record: dict, path: Path) -> None:
    """Validation force RMSE against CPU and wall seconds of training, both models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for side, label in (("equimol", "equimol (3bpa_quick)"), ("mace", 'MACE 0.3.16 "small"')):
        curve = record["curves"][side]
        for axis, key in zip(axes, ("cpu_s", "wall_s")):
            axis.plot([r[key] for r in curve], [1e3 * r["val_forces_rmse"] for r in curve], "o-", ms=3, label=label)
    axes[0].set(xlabel="training CPU time (s, one thread)", ylabel="validation force RMSE (meV/Å)", yscale="log")
    axes[1].set(xlabel="training wall time (s, both jobs at once)")
    axes[0].legend()
    machine = record["software"]["machine"]
    figure.suptitle(
        f"3BPA train_300K, {record['budget_cpu_s']:g} CPU s each; {machine['cpu']} ({machine['cpu_count']} cores)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def markdown(record: dict, png: str) -> str:
    """The Markdown report (tables of test errors and, if measured, calculator timings)."""
    software, machine, load = record["software"], record["software"]["machine"], record["training"]["load_1min"]
    lines = [
        "# equimol vs MACE on 3BPA: test errors after the same CPU-time budget",
        "",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores, {machine['platform']}. "
        f"equimol {software['equimol_env']['equimol']} (commit {software['equimol_commit']}), torch "
        f"{software['equimol_env']['torch']}, e3nn {software['equimol_env']['e3nn']}; mace-torch "
        f"{software['mace_env']['mace-torch']}, torch {software['mace_env']['torch']}, "
        f"e3nn {software['mace_env']['e3nn']}.",
        f"Both trainings ran at the same time, one torch thread each (`OMP_NUM_THREADS=1`, `nice -n 5`), for "
        f"{record['budget_cpu_s']:g} CPU seconds each from the first training batch. 1-minute load average during "
        f"training: mean {load['mean']:.1f}, min {load['min']:.1f}, max {load['max']:.1f}. Seed {record['seed']}.",
        f"Data: 475 training / 25 validation frames of `3bpa/train_300K.xyz` (the same for both), E0s from "
        f"`3bpa/iso_atoms.xyz`; test on {record['test']['equimol']['test_300K']['frames']} frames of `test_300K` and "
        f"{record['test']['equimol']['test_600K']['frames']} of `test_600K`.",
        f"equimol: `{record['config']}` {' '.join(record['equimol_overrides']) or '(as shipped)'}. "
        'MACE "small": `' + " ".join(MACE_SMALL) + "` (the full command line is in the JSON).",
        "",
        "| model | epochs (steps) | training CPU s | training wall s | test_300K E (meV/atom) | E (meV) | F (meV/Å) "
        "| test_600K E (meV/atom) | E (meV) | F (meV/Å) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for side, label in (("equimol", "equimol"), ("mace", 'MACE "small"')):
        fit, tests = record["fit"][side], record["test"][side]
        cells = [f"{len(record['curves'][side])} ({fit['steps']})", f"{fit['cpu_s']:.0f}", f"{fit['wall_s']:.0f}"]
        for name in ("test_300K", "test_600K"):
            cells += [f"{tests[name][k]:.2f}" for k in ("energy_rmse_per_atom", "energy_rmse")]
            cells.append(f"{tests[name]['forces_rmse']:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Epochs = validations during training (the last epoch is cut short by the budget). Each model is the one",
        "its code ships: the best on validation, EMA weights. RMSEs from one function over both codes' predictions:",
        "energy per atom and per structure, force over all Cartesian components.",
        f"Validation force RMSE against CPU and wall time: `{png}`.",
    ]
    if record.get("timing"):
        header = ["atoms", "threads", "calls each", "load", "equimol (ms)", "MACE small (ms)", "equimol / MACE"]
        rows = [
            [row["atoms"], row["threads"], row["calls"], f"{row['load_1min']:.1f}"]
            + [f"{1e3 * row['median_s'][side]:.1f}" for side in ("equimol", "mace")]
            + [f"{row['ratio_equimol_over_mace']:.2f}"]
            for row in record["timing"]
        ]
        lines += [
            "",
            "Energy+forces through the ASE calculator (median per call; atoms moved slightly before each call, as",
            "in MD; workers asked in turn, the order swapped each round). Box: 36 randomly oriented 3BPA molecules,",
            "0.6 g/cm³.",
            "",
            *markdown_table(header, rows),
        ]
    return "\n".join([*lines, "", f"Command: `{record['command']}`", ""])


def write_report(record: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(record, indent=1) + "\n")
    Path(f"{out}.md").write_text(markdown(record, f"{out.name}.png"))
    plot(record, Path(f"{out}.png"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=540.0, help="CPU seconds of training each (default 540)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of both trainings (default 0)")
    parser.add_argument("--config", type=Path, default=Path("configs/3bpa_quick.yaml"), help="equimol config")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared/data", help="holds 3bpa/")
    parser.add_argument("--work", type=Path, default=ROOT / "runs/accuracy_vs_mace_3bpa", help="run folder")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/accuracy_vs_mace_3bpa", help="report prefix")
    parser.add_argument("--test-limit", type=int, help="first N frames of each test set only (dry runs)")
    parser.add_argument("--timing", action="store_true", help="also time E+F through both calculators")
    parser.add_argument("--timing-only", action="store_true", help="time the models in --work, update --out")
    parser.add_argument("--timing-rounds", type=int, default=10, help="interleaved rounds per timing (default 10)")
    parser.add_argument("--timing-threads", type=int, nargs="+", default=[1, 2], help="torch threads (default 1 2)")
    parser.add_argument("overrides", nargs="*", help="equimol section.key=value overrides (e.g. the architecture)")
    args = parser.parse_intermixed_args(argv)
    command = "bash benchmarks/accuracy_vs_mace_3bpa.sh " + " ".join(argv if argv is not None else sys.argv[1:])
    work = args.work.resolve()
    if args.timing_only:
        record = json.loads(Path(f"{args.out}.json").read_text())
        record["timing"] = run_timing(work, args.data_dir, args.timing_rounds, tuple(args.timing_threads))
        write_report(record, args.out)
        return 0
    work.mkdir(parents=True, exist_ok=True)
    for stale in ("equimol_curve.jsonl", "mace_curve.jsonl"):
        (work / stale).unlink(missing_ok=True)
    for stale in ("equimol", "mace"):  # MACE would load a stale run's latest checkpoint at the end
        if (work / stale).exists():
            shutil.rmtree(work / stale)
    paths = prepare_data(args.data_dir, work, args.seed, args.test_limit)
    commands = train_commands(args, paths)
    print(f"training both for {args.budget:g} CPU s each; logs in {work}/{{equimol,mace}}.log", flush=True)
    training = run_side_by_side(commands, work)
    curves = {side: read_curve(work / f"{side}_curve.jsonl") for side in ("equimol", "mace")}
    print("evaluating on test_300K and test_600K", flush=True)
    record = {
        "command": command, "budget_cpu_s": args.budget, "seed": args.seed, "config": str(args.config),
        "equimol_overrides": args.overrides, "mace_arguments": commands["mace"], "test_limit": args.test_limit,
        "software": versions(), "training": training, "test": evaluate(work, paths),
        "curves": {side: curve["validations"] for side, curve in curves.items()},
        "fit": {side: curve["fit_end"] for side, curve in curves.items()},
        "process_cpu_s": {side: curve["process_cpu_s"] for side, curve in curves.items()},
    }  # fmt: skip
    record["timing"] = (
        run_timing(work, args.data_dir, args.timing_rounds, tuple(args.timing_threads)) if args.timing else None
    )
    write_report(record, args.out)
    print(Path(f"{args.out}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
