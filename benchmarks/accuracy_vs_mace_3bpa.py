"""Side-by-side accuracy of equimol's main-job config and MACE "small" on 3BPA, for the same CPU-time budget.

Run through ``benchmarks/accuracy_vs_mace_3bpa.sh`` (which sets up both virtual environments)::

    bash benchmarks/accuracy_vs_mace_3bpa.sh [--budget 540] [--seed 0] [--timing] [section.key=value ...]
    .venv/bin/python benchmarks/accuracy_vs_mace_3bpa.py --report-from benchmarks/accuracy_vs_mace_3bpa.json \
        --out PREFIX    # the report (md, png) again from a JSON record

Steps, each recorded in ``--out``.json/.md/.png (default ``benchmarks/accuracy_vs_mace_3bpa``; an existing report is
replaced only with ``--overwrite``); the jobs are ``main:SEED`` and ``mace:SEED`` of ``_accuracy_3bpa.py``:

1. **Data.** The 475/25 split of ``3bpa/train_300K.xyz`` with ``--seed``, in ``--work``/data.
2. **Training, both at the same time, one torch thread each**: ``equimol train configs/3bpa_quick.yaml`` with
   any overrides given here, and MACE "small", each for ``--budget`` CPU seconds from its first training batch.
   Each code validates after every epoch (also after the last, partial one) and ships its best model on
   validation, with EMA weights.
3. **Test.** Each shipped model predicts ``test_300K`` and ``test_600K`` with its own code's tool.
4. **Learning curves**: validation force RMSE against CPU and wall seconds of training, recorded by each
   training process at every validation.
5. ``--timing``: energy+forces through each code's ASE calculator (a 3BPA molecule; 36 molecules in a
   periodic box, 972 atoms), 1 and 2 threads, two worker processes asked in turn (interleaved).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import _accuracy_3bpa as acc
import ase
import ase.io
import numpy as np
from _accuracy_3bpa_workers import MARK
from _common import ROOT, SHARED_DATA, check_outputs, fail, markdown_table


def molecule_box(molecules: list[ase.Atoms], density: float = 0.6, grid=(3, 3, 4), seed: int = 0) -> ase.Atoms:
    """Periodic box of randomly rotated molecules on a ``grid`` lattice at ``density`` g/cm³ (3 x 3 x 4 = 36).

    Each molecule is centred on its lattice site and rotated at random until no atom is within 1.8 Å of
    another molecule's (minimum image). 0.6 g/cm³ packs 3BPA without retries running out.
    """
    spacing = (molecules[0].get_masses().sum() / (density * 0.602214)) ** (1.0 / 3.0)  # Å; amu/Å³ per g/cm³
    lengths, rng = spacing * np.array(grid), np.random.default_rng(seed)
    positions, numbers = np.zeros((0, 3)), []
    for index, site in enumerate(np.ndindex(*grid)):
        molecule = molecules[index % len(molecules)]
        centered = molecule.positions - molecule.get_center_of_mass()
        for _ in range(5000):
            rotation, upper = np.linalg.qr(rng.normal(size=(3, 3)))
            trial = centered @ (rotation * np.sign(np.diag(upper))).T + (np.array(site) + 0.5) * spacing
            gaps = trial[:, None, :] - positions[None, :, :]
            gaps -= lengths * np.round(gaps / lengths)
            if len(positions) == 0 or np.sqrt((gaps**2).sum(-1)).min() >= 1.8:
                positions, numbers = np.vstack([positions, trial]), [*numbers, *molecule.numbers]
                break
        else:
            raise RuntimeError(f"molecule_box: no room for molecule {index} at {density} g/cm^3")
    return ase.Atoms(numbers=numbers, positions=positions, cell=np.diag(lengths), pbc=True)


class TimingWorker:
    """A timing worker process (``_accuracy_3bpa_workers.py timing``): one code's ASE calculator, over a pipe."""

    def __init__(self, python: Path, side: str, model: Path, structures: Path) -> None:
        command = [str(python), str(acc.WORKERS), "timing", side, str(model), str(structures)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.answer()

    def answer(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])
        raise RuntimeError(f"timing worker {self.process.args} ended (exit {self.process.wait()})")

    def times(self, structure: int, threads: int, calls: int) -> list[float]:
        self.process.stdin.write(json.dumps({"structure": structure, "threads": threads, "calls": calls}) + "\n")
        self.process.stdin.flush()
        return self.answer()["times"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def run_timing(args: argparse.Namespace) -> list[dict]:
    """E+F time through both calculators, workers asked in turn (order swapped every round); medians, ratio."""
    work, rounds = args.work, args.timing_rounds
    molecules = ase.io.read(args.data_dir / "3bpa/test_300K.xyz", ":36")
    structures = [molecules[0], molecule_box(molecules)]
    for atoms in structures:
        atoms.calc = None
    structures_file = work / "timing_structures.xyz"
    ase.io.write(structures_file, structures, format="extxyz")
    pythons = {"equimol": Path(sys.executable), "mace": args.mace_python}
    workers = {side: TimingWorker(python, side, acc.shipped_model(work, f"{acc.SIDES[side]}:{args.seed}"),
                                  structures_file) for side, python in pythons.items()}  # fmt: skip
    results = []
    try:
        for count in args.timing_threads:
            for index, atoms in enumerate(structures):
                calls = 10 if len(atoms) < 100 else 2
                for worker in workers.values():
                    worker.times(index, count, 2)  # warm-up
                times: dict[str, list[float]] = {"equimol": [], "mace": []}
                for round_ in range(rounds):
                    for side in ("equimol", "mace") if round_ % 2 == 0 else ("mace", "equimol"):
                        times[side] += workers[side].times(index, count, calls)
                medians = {side: statistics.median(values) for side, values in times.items()}
                results.append({
                    "atoms": len(atoms), "threads": count, "calls": len(times["mace"]), "load_1min": os.getloadavg()[0],
                    "median_s": medians, "ratio_equimol_over_mace": medians["equimol"] / medians["mace"],
                })  # fmt: skip
    finally:
        for worker in workers.values():
            worker.close()
    return results


def plot(record: dict, path: Path) -> None:
    """Validation force RMSE against CPU and wall seconds of training, both models."""
    figure, axes = acc.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for side, label in (("equimol", "equimol (3bpa_quick)"), ("mace", 'MACE 0.3.16 "small"')):
        curve = record["curves"][side]
        for axis, key in zip(axes, ("cpu_s", "wall_s")):
            axis.plot([r[key] for r in curve], [1e3 * r["val_forces_rmse"] for r in curve], "o-", ms=3, label=label)
    axes[0].set(xlabel="training CPU time (s, one thread)", ylabel="validation force RMSE (meV/Å)", yscale="log")
    axes[1].set(xlabel="training wall time (s, both jobs at once)")
    axes[0].legend()
    machine = record["software"]["machine"]
    figure.suptitle(f"3BPA train_300K, {record['budget_cpu_s']:g} CPU s each; "
                    f"{machine['cpu']} ({machine['cpu_count']} cores)")  # fmt: skip
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
        'MACE "small": `' + " ".join(acc.MACE_SMALL) + "` (the full command line is in the JSON).",
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
    acc.save_report(out, record, markdown(record, f"{out.name}.png").split("\n"), lambda path: plot(record, path))


def train_and_test(args: argparse.Namespace, command: str) -> dict:
    """Steps 1 to 4: the record of both sides (``equimol`` is the job ``main:SEED``)."""
    jobs = {side: f"{code}:{args.seed}" for side, code in acc.SIDES.items()}
    for job in jobs.values():  # an interrupted equimol job resumes; a finished one is kept
        if (acc.job_folder(args.work, job) / "results.json").exists():
            fail(f"{acc.job_folder(args.work, job)} holds a finished run; choose another --work or remove it")
    paths = acc.prepare_data(args.data_dir, args.work, args.seed, args.test_limit)
    runs: dict[str, dict] = {}

    def train(job: str) -> None:
        runs[job] = acc.train_job(job, args, paths, args.overrides, snapshots=[], split_seed=args.seed)

    print(f"training both for {args.budget:g} CPU s each; logs in {args.work}/*/train.log", flush=True)
    training = acc.run_queue(list(jobs.values()), 2, train)
    if training["failures"]:
        fail(f"training {' and '.join(training['failures'])} failed; see {args.work}/*/train.log")
    print("evaluating on test_300K and test_600K", flush=True)
    testing = acc.run_queue(list(jobs.values()), 2, lambda job: acc.test_job(runs[job], args, paths, [], final=True))
    if testing["failures"]:
        fail(f"testing {' and '.join(testing['failures'])} failed")
    sides = {side: runs[job] for side, job in jobs.items()}
    return {
        "command": command, "budget_cpu_s": args.budget, "seed": args.seed, "config": str(args.config),
        "equimol_overrides": args.overrides, "mace_arguments": sides["mace"]["command"], "test_limit": args.test_limit,
        "software": acc.versions(args.mace_python),
        "training": {"processes": {side: {"returncode": 0, "wall_s": run["train_wall_s"]} for side, run in
                                   sides.items()}, "load_1min": training["load_1min"]},
        "test": {side: run["final"] for side, run in sides.items()},
        "curves": {side: run["validations"] for side, run in sides.items()},
        "fit": {side: run["fit_end"] for side, run in sides.items()},
        "process_cpu_s": {side: run["process_cpu_s"] for side, run in sides.items()},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    acc.add_job_arguments(parser, budget=540.0)
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of both trainings (default 0)")
    parser.add_argument("--config", type=Path, default=Path("configs/3bpa_quick.yaml"), help="equimol config")
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA, help="holds 3bpa/")
    parser.add_argument("--work", type=Path, default=ROOT / "runs/accuracy_vs_mace_3bpa", help="run folder")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/accuracy_vs_mace_3bpa", help="report prefix")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")
    parser.add_argument("--report-from", type=Path, help="only write the report (md, png) from this JSON record")
    parser.add_argument("--timing", action="store_true", help="also time E+F through both calculators")
    parser.add_argument("--timing-only", action="store_true",
                        help="time the models in --work; the rest from --report-from")  # fmt: skip
    parser.add_argument("--timing-rounds", type=int, default=10, help="interleaved rounds per timing (default 10)")
    parser.add_argument("--timing-threads", type=int, nargs="+", default=[1, 2], help="torch threads (default 1 2)")
    parser.add_argument("overrides", nargs="*", help="equimol section.key=value overrides (e.g. the architecture)")
    args = parser.parse_intermixed_args(argv)
    args.work = args.work.resolve()
    command = "bash benchmarks/accuracy_vs_mace_3bpa.sh " + " ".join(argv if argv is not None else sys.argv[1:])
    source = args.report_from
    check_outputs([f"{args.out}.{ext}" for ext in ("json", "md", "png")], args.overwrite)
    if source is None or args.timing_only:
        acc.check_mace_python(args.mace_python)
    if args.timing_only and source is None:
        fail("--timing-only needs the record of the trained models: --report-from JSON")
    if source is not None:  # a report from a record (with new timings for --timing-only)
        if not source.is_file():
            fail(f"{source}: no such JSON record")
        record = json.loads(source.read_text())
        if args.timing_only:
            record["timing"] = run_timing(args)
    else:
        record = train_and_test(args, command)
        record["timing"] = run_timing(args) if args.timing else None
    write_report(record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
