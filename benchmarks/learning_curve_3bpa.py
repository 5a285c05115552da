"""Learning curves on 3BPA: test errors of equimol and MACE "small" against training CPU time, to an hour.

Jobs are ``CODE:SEED`` run as ``_accuracy_3bpa.py`` describes (split seed 0 for every job): ``mace:0`` is MACE
0.3.16 "small", ``main:0`` is ``configs/3bpa_quick.yaml`` as shipped, and any other name is a variant of
:data:`VARIANTS` (the main job with a few keys changed, for choosing the model of a one-hour budget). At each
of ``--snapshots`` CPU seconds a run writes its EMA weights to a model file, and every snapshot is tested on
``test_300K`` and ``test_600K``. Jobs run ``--parallel`` at a time; a finished job (its ``results.json``) is
skipped when the command is run again, so an interrupted study resumes::

    bash benchmarks/accuracy_vs_mace_3bpa.sh --setup-only        # both virtual environments
    .venv/bin/python benchmarks/learning_curve_3bpa.py run main:0 mace:0 main:1 mace:1
    .venv/bin/python benchmarks/learning_curve_3bpa.py run channels64:0 lmax2:0 --budget 3600
    .venv/bin/python benchmarks/learning_curve_3bpa.py report [--out PREFIX] [--overwrite]

``report`` writes ``--out``.json/.md/.png (default ``benchmarks/learning_curve_3bpa``) from every
finished job in ``--work`` (default ``runs/learning_curve_3bpa``); it refuses to replace an existing
report without ``--overwrite``. The report holds the measurements; what they show is written in
``docs/benchmarks/accuracy.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import _accuracy_3bpa as acc
from _common import ROOT, SHARED_DATA, check_outputs, fail, markdown_table

#: equimol variants: name -> overrides of configs/3bpa_quick.yaml (``main`` is the shipped config).
VARIANTS: dict[str, list[str]] = {
    "main": [],
    "channels64": ["model.channels=64"],
    "lmax2": ["model.lmax=2"],
    "layers3": ["model.num_layers=3"],
    "gaunt_messages": ["model.tp_backend=gaunt", "model.tp_options={strategy: edge}"],
    "cosine": ["scheduler.name=budget_cosine"],
    "channels64_cosine": ["model.channels=64", "scheduler.name=budget_cosine"],
}


def run(args: argparse.Namespace) -> int:
    for job in args.jobs:
        code, _, seed = job.partition(":")
        if code != "mace" and code not in VARIANTS or not seed.isdigit():
            fail(f"unknown job {job!r} (mace:SEED or VARIANT:SEED, variants {sorted(VARIANTS)})")
    if any(job.startswith("mace:") for job in args.jobs):
        acc.check_mace_python(args.mace_python)
    paths = acc.prepare_data(args.data_dir, args.work, seed=0, test_limit=args.test_limit)

    def job(name: str) -> None:
        record = acc.train_job(name, args, paths, VARIANTS.get(name.split(":")[0]), args.snapshots)
        acc.test_job(record, args, paths, args.snapshots)

    todo = [name for name in args.jobs if not (acc.job_folder(args.work, name) / "results.json").exists()]
    return 1 if acc.run_queue(todo, args.parallel, job)["failures"] else 0


def summarize(records: list[dict]) -> dict:
    """Mean over seeds of every (code, snapshot, test set, metric)."""
    table: dict = {}
    for record in records:
        for snapshot in record["snapshots"]:
            for name in acc.TESTS:
                for metric in ("energy_rmse_per_atom", "forces_rmse"):
                    key = (record["code"], snapshot["cpu_s"], name, metric)
                    table.setdefault(key, []).append(snapshot[name][metric])
    return {"|".join(map(str, key)): {"mean": statistics.fmean(v), "values": v, "seeds": len(v)}
            for key, v in sorted(table.items())}  # fmt: skip


def plot(records: list[dict], path: Path, title: str) -> None:
    """RMSE against training CPU time, log-log: test_300K and test_600K, E and F, one line per run."""
    figure, axes = acc.subplots(2, 2, figsize=(11, 8), sharex=True)
    colors = {"main": "tab:blue", "mace": "tab:red"}
    others = iter(["tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:gray"])
    for record in sorted(records, key=lambda r: (r["code"] != "main", r["code"] != "mace", r["code"], r["seed"])):
        code = record["code"]
        if code not in colors:
            colors[code] = next(others)
        color = colors[code]
        label = {"main": "equimol (3bpa_quick)", "mace": 'MACE 0.3.16 "small"'}.get(code, f"equimol {code}")
        times = [s["cpu_s"] for s in record["snapshots"]]
        for row, name in enumerate(acc.TESTS):
            for column, (metric, unit) in enumerate((("forces_rmse", "F (meV/Å)"), ("energy_rmse_per_atom",
                                                                                   "E (meV/atom)"))):  # fmt: skip
                axis = axes[row, column]
                axis.plot(times, [s[name][metric] for s in record["snapshots"]], marker="o", color=color, ms=4,
                          ls="-" if record["seed"] == 0 else "--", label=f"{label}, seed {record['seed']}")  # fmt: skip
                axis.set(xscale="log", yscale="log", title=f"{name}: {unit.split()[0]} RMSE",
                         ylabel=f"RMSE {unit}")  # fmt: skip
                axis.grid(True, which="both", alpha=0.3)
    for axis in axes[1]:
        axis.set_xlabel("training CPU time (s, one thread)")
    axes[0, 0].legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def report(args: argparse.Namespace) -> int:
    out = args.out
    check_outputs([f"{out}.json", f"{out}.md", f"{out}.png"], args.overwrite)
    records = [json.loads(p.read_text()) for p in sorted(args.work.glob("*/results.json"))]
    if not records:
        fail(f"no finished job in {args.work}")
    acc.check_mace_python(args.mace_python)
    software = acc.versions(args.mace_python)
    machine = software["machine"]
    loads = [x for r in records for x in r["load_1min_start_end"]]
    jobs = " ".join(r["job"] for r in records)
    record = {"software": software, "runs": records, "mean_over_seeds": summarize(records),
              "command": f"python benchmarks/learning_curve_3bpa.py run {jobs}"}  # fmt: skip
    title = f"3BPA, 475 training frames, one thread per run; {machine['cpu']} ({machine['cpu_count']} cores)"
    codes = sorted({r["code"] for r in records}, key=lambda c: (c != "main", c != "mace", c))
    times = sorted({s["cpu_s"] for r in records for s in r["snapshots"]})
    lines = [
        '# Learning curves on 3BPA: equimol against MACE "small" to an hour of CPU time',
        "",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores, {machine['platform']}. equimol "
        f"{software['equimol_env']['equimol']} (commit {software['equimol_commit']}), torch "
        f"{software['equimol_env']['torch']}; mace-torch {software['mace_env']['mace-torch']}, torch "
        f"{software['mace_env']['torch']}, e3nn {software['mace_env']['e3nn']}.",
        f"One torch thread per run, two runs at a time beside other work on the machine (runs reniced to -5 or -10, "
        "process and autogroup, so that other work waited): 1-minute load "
        f"average at the starts and ends of the runs {min(loads):.1f} to {max(loads):.1f}. Budgets are CPU seconds "
        "of each training process from its first batch (equimol's cold compilation included).",
        "Data: 475 training / 25 validation frames of `3bpa/train_300K.xyz` (split seed 0, the same for every run), "
        "E0s from `3bpa/iso_atoms.xyz`; every snapshot (EMA weights at that CPU time) tested on all 1669 frames of "
        "`test_300K` and 2138 of `test_600K`.",
        f'MACE "small": `{" ".join(acc.MACE_SMALL)}`. equimol variants are `configs/3bpa_quick.yaml` with: '
        + "; ".join(f"`{c}` {' '.join(VARIANTS[c]) or '(as shipped)'}" for c in codes if c != "mace")
        + ".",
        "",
        "Mean over seeds (seeds in brackets); E in meV/atom, F in meV/Å:",
        "",
    ]
    summary = record["mean_over_seeds"]
    header = ["run", "CPU s"] + [f"{name} {q}" for name in acc.TESTS for q in ("E", "F")] + ["steps"]
    rows = []
    for code in codes:
        for cpu_s in times:
            cells = [f"{code}", f"{cpu_s:g}"]
            for name in acc.TESTS:
                for metric, digits in (("energy_rmse_per_atom", 2), ("forces_rmse", 1)):
                    entry = summary.get(f"{code}|{cpu_s}|{name}|{metric}")
                    cells.append("–" if entry is None else f"{entry['mean']:.{digits}f} ({entry['seeds']})")
            steps = [s.get("steps") for r in records if r["code"] == code for s in r["snapshots"]
                     if s["cpu_s"] == cpu_s and s.get("steps") is not None]  # fmt: skip
            cells.append(f"{statistics.fmean(steps):.0f}" if steps else "–")
            rows.append(cells)
    lines += markdown_table(header, rows)
    lines += ["", "Every run (E meV/atom / F meV/Å at each snapshot):", ""]

    def cell(run: dict, cpu_s: float) -> str:
        s = next((s for s in run["snapshots"] if s["cpu_s"] == cpu_s), None)
        if s is None:
            return "–"
        return (f"{s['test_300K']['energy_rmse_per_atom']:.2f} / {s['test_300K']['forces_rmse']:.1f}; "
                f"{s['test_600K']['energy_rmse_per_atom']:.2f} / {s['test_600K']['forces_rmse']:.1f}")  # fmt: skip

    rows = [[r["job"]] + [cell(r, t) for t in times] for r in records]
    lines += markdown_table(["run"] + [f"{t:g} CPU s: 300K; 600K" for t in times], rows)
    lines += ["", f"Plot: `{Path(out).name}.png`. Command: `{record['command']}`.", ""]
    acc.save_report(out, record, lines, lambda path: plot(records, path, title))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs/learning_curve_3bpa", help="run folders")
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA, help="holds 3bpa/")
    parser.set_defaults(config=acc.CONFIG)
    commands = parser.add_subparsers(dest="command", required=True)
    runner = commands.add_parser("run", help="train and test jobs CODE:SEED (mace:0, main:0, channels64:1, ...)")
    runner.add_argument("jobs", nargs="+")
    acc.add_job_arguments(runner, budget=3600.0)
    runner.add_argument("--snapshots", type=float, nargs="+", default=[540.0, 1200.0, 2400.0, 3600.0])
    runner.add_argument("--parallel", type=int, default=2, help="jobs at a time, one thread each (default 2)")
    reporter = commands.add_parser("report", help="write --out.{json,md,png} from the finished jobs")
    reporter.add_argument("--out", type=Path, default=ROOT / "benchmarks/learning_curve_3bpa", help="report prefix")
    reporter.add_argument("--overwrite", action="store_true", help="replace an existing report")
    reporter.add_argument("--mace-python", type=Path, default=acc.MACE_PYTHON, help="python of the MACE environment")
    args = parser.parse_args(argv)
    args.work = args.work.resolve()
    return {"run": run, "report": report}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
