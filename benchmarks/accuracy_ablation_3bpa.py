"""Ablation of force accuracy on 3BPA: one factor at a time, several seeds, a fixed CPU-time budget.

Every run is ``equimol train configs/3bpa_quick.yaml`` with the overrides of one variant, a seed, one
torch thread and ``trainer.max_cpu_time`` as its budget (CPU seconds of the training process, so a
loaded machine slows a run down but does not shorten its training), then the evaluation on
3BPA ``test_300K`` that ``equimol train`` runs itself. Each run compiles into its own empty Inductor cache.
The variants are spelled out in full here (not relative to the shipped config, which this study is used to
choose), so the table stays reproducible:

* ``gated``: the first-wave default (16 channels, L = 2, gated interaction, one read-out, no many-body);
* ``mace``: the MACE-style layer (``interaction: product_basis``: TP messages up to ``message_lmax = 3``,
  CG symmetric product of correlation 3 with per-element weights, species-dependent self-connection),
  a read-out per layer, radial MLP 3 x 64, 32 channels, L = 1, float32 — the settings of MACE "small";
* ``mace-*``: ``mace`` with exactly one factor changed back or swapped.

Usage (each finished run is merged into ``--out``.json, so an interrupted study resumes; runs of an existing
file are added to it only with ``--overwrite``; ``--out``.md is the table)::

    python benchmarks/accuracy_ablation_3bpa.py --budget 180 --seeds 0 1 2 --parallel 2 --out PREFIX
    python benchmarks/accuracy_ablation_3bpa.py --report-from benchmarks/accuracy_ablation_3bpa.json --out PREFIX

ZBL on against off (the shipped main job is ``main-compile``, seeds 0-4 already in the JSON file)::

    .venv/bin/python benchmarks/accuracy_ablation_3bpa.py --variants main-zbl --seeds 0 1 2 --budget 540 \\
        --parallel 2 --overwrite
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import threading
from pathlib import Path

import _accuracy_3bpa as acc
from _common import ROOT, check_outputs, equimol_command, fail, start_record, write_json

# glibc's malloc defaults and eager training, as in every run before trainer.retain_freed_memory (default true)
# and trainer.compile_step (true in the shipped config; ``trainer.compile`` in the older records) existed;
# data.batch_size pinned (main-batch-3 changes it)
GATED = [
    "model.interaction=gated", "model.many_body=none", "model.channels=16", "model.lmax=2", "model.sh_lmax=2",
    "model.message_lmax=null", "model.self_connection=linear", "model.readout=final", "model.radial_mlp_hidden=[32]",
    "trainer.precision=64", "model.tp_options={strategy: e3nn}", "data.batch_size=5",
    "trainer.retain_freed_memory=false", "trainer.compile_step=false",
]  # fmt: skip
# These runs used e3nn's product for the cg messages and a first layer on zero-padded inputs; the 'edge'
# strategy (same product, faster) and the scalar-input first layer (MACE's) came later.
MACE = [
    "model.interaction=product_basis", "model.many_body=cg", "model.correlation=3", "model.channels=32",
    "model.lmax=1", "model.sh_lmax=3", "model.message_lmax=3", "model.self_connection=species",
    "model.readout=per_layer", "model.radial_mlp_hidden=[64,64,64]", "trainer.precision=32",
    "model.tp_options={strategy: e3nn}", "model.scalar_first_layer=false", "data.batch_size=5",
    "trainer.retain_freed_memory=false", "trainer.compile_step=false",
]  # fmt: skip


def _with(base: list[str], *changes: str) -> list[str]:
    keys = {change.split("=", 1)[0] for change in changes}
    return [item for item in base if item.split("=", 1)[0] not in keys] + list(changes)


MAIN = _with(MACE, "model.many_body=gaunt", "model.tp_options={strategy: edge}")
# the shipped main job: the faster cg strategy and the scalar-input first layer
MAIN_SHIPPED = _with(MAIN, "model.scalar_first_layer=true")
# ... budgeted in optimizer steps (a step budget does not depend on the machine's load; 4500 steps took
# 950-1050 CPU-s here)
MAIN_STEPS = _with(MAIN_SHIPPED, "trainer.max_steps=4500")
# ... with freed memory kept by glibc (equimol/utils/allocator.py): the shipped default since it was measured
MAIN_RETAIN = _with(MAIN_SHIPPED, "trainer.retain_freed_memory=true")

# lr 0.02 held, then a cosine to 0 over the budget (warm-stable-decay)
WSD = _with(MAIN_RETAIN, "trainer.compile_step=true", "optimizer.lr=0.02", "scheduler.name=budget_cosine")
# fmt: off
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "gated": ("first-wave default", GATED),
    "mace": ("MACE-style layer, all factors", MACE),
    "mace-final-readout": ("one read-out (last layer only)", _with(MACE, "model.readout=final")),
    "mace-linear-self": ("self-connection shared by all elements", _with(MACE, "model.self_connection=linear")),
    "mace-message-l1": ("atomic basis only up to L = 1", _with(MACE, "model.message_lmax=1", "model.sh_lmax=1")),
    "mace-gaunt-product": ("Gaunt nu-product instead of the CG symmetric product",
        _with(MACE, "model.many_body=gaunt")),
    "main-edge": ("main job, cg messages by the 'edge' strategy (same product, 1.45x less CPU per step)", MAIN),
    "main": ("the main job (cg 'edge' messages, scalar-input first layer, batches of 5), glibc's malloc defaults",
        MAIN_SHIPPED),
    "main-retain": ("`main` with freed memory retained (no page faults per step)", MAIN_RETAIN),
    "main-retain-cutoff-4.5": ("main-retain with a 4.5 Å radial cutoff instead of 5 Å (fewer edges: 0.8x CPU per step)",
        _with(MAIN_RETAIN, "model.radial_cutoff=4.5")),
    "main-compile": (
        "main-retain through one compiled energy-and-forces graph (Inductor defaults; compilers off the clock)",
        _with(MAIN_RETAIN, "trainer.compile_step=true")),
    "main-compile-one-unit": (
        "main-compile with each compiled graph built as one C++ unit of scalar loops (cpp_wrapper, "
        "cpp.vec_isa_ok false: train/compiled_forces.py at commit fb084b1); cold Inductor cache and headers",
        _with(MAIN_RETAIN, "trainer.compile_step=true")),
    "main-compile-one-unit-vector": (
        "main-compile with each compiled graph built as one C++ unit with vector code (cpp_wrapper, cpp.vec_isa_ok "
        "true: train/compiled_forces.py INDUCTOR_OPTIONS as shipped); cold Inductor cache and headers",
        _with(MAIN_RETAIN, "trainer.compile_step=true")),
    "main-compile-cosine": (
        "main-compile-one-unit-vector with cosine decay to 0 over the CPU budget, every step (scheduler.name: "
        "budget_cosine) instead of the plateau schedule; cold Inductor cache and headers",
        _with(MAIN_RETAIN, "trainer.compile_step=true", "scheduler.name=budget_cosine")),
    "main-compile-lr-0.02": (
        "main-compile-one-unit-vector with a learning rate of 0.02 instead of 0.01; cold Inductor cache and headers",
        _with(MAIN_RETAIN, "trainer.compile_step=true", "optimizer.lr=0.02")),
    "main-compile-lr-0.02-wsd": (
        "main-compile-lr-0.02 held at the peak rate for 80% of the CPU budget, then a cosine decay to 0 "
        "(scheduler.name: budget_cosine, decay_start: 0.8); cold Inductor cache and headers",
        _with(MAIN_RETAIN, "trainer.compile_step=true", "optimizer.lr=0.02", "scheduler.name=budget_cosine",
              "scheduler.decay_start=0.8")),
    "main-fixed-counts": ("the shipped main job with fused Adam and the compiled graph built for the batches' "
        "fixed atom and structure counts (commit 2000148); cold Inductor cache and headers",
        _with(MAIN_RETAIN, "trainer.compile_step=true")),
    "main-fused-wsd": ("main-compile-lr-0.02-wsd with fused Adam (train/module.py since commit f02f465); cold "
        "Inductor cache and headers", _with(WSD, "scheduler.decay_start=0.8")),
    "main-fused-wsd-0.6": ("main-fused-wsd with the decay from 60% of the CPU budget (scheduler.decay_start: 0.6); "
        "cold Inductor cache and headers", _with(WSD, "scheduler.decay_start=0.6")),
    "main-compile-ema-0.995": (
        "main-compile-one-unit-vector with an EMA decay of 0.995 instead of 0.99; cold Inductor cache and headers",
        _with(MAIN_RETAIN, "trainer.compile_step=true", "optimizer.ema_decay=0.995")),
    "main-basis-l2": ("main job, atomic basis up to L = 2 (message_lmax; 0.69x CPU per step)",
        _with(MAIN_SHIPPED, "model.message_lmax=2")),
    "main-sh2": ("main job, edge harmonics and atomic basis up to L = 2 (0.66x CPU per step)",
        _with(MAIN_SHIPPED, "model.message_lmax=2", "model.sh_lmax=2")),
    "main-budget-cosine": (
        "main job, cosine decay to 0 over the CPU budget, every step (instead of the plateau schedule)",
        _with(MAIN_SHIPPED, "scheduler.name=budget_cosine")),
    "main-batch-3": ("main job with batches of 3 structures instead of 5 (more, smaller optimizer steps)",
        _with(MAIN_SHIPPED, "data.batch_size=3")),
    "main-4500": ("main job (cg 'edge' messages, scalar-input first layer), 4500 optimizer steps", MAIN_STEPS),
    "main-4500-cp-message": ("main-4500 with cp messages (rank 7L^2, one weight per channel for all paths)",
        _with(MAIN_STEPS, "model.tp_backend=cp", "model.tp_options={}")),
    "zbl-off": ("main-compile again, run beside `zbl-on` (the reference of the ZBL comparison)",
        _with(MAIN_RETAIN, "trainer.compile_step=true")),
    "zbl-on": ("main-compile with ZBL repulsion at its default switch radii (model.pair_repulsion: zbl)",
        _with(MAIN_RETAIN, "trainer.compile_step=true", "model.pair_repulsion=zbl")),
}
# fmt: on


FINDINGS = """
## Findings

- **The MACE-style layer** (`mace` against `gated`, EPYC, 180 CPU-s): 94.1 against 147.5 meV/Å.
- **The Gaunt ν-product** instead of the CG symmetric product (`mace-gaunt-product`): 74.8 against
  94.1 at 180 CPU-s. It costs less per step (738–822 steps against 513–538), and more steps are what
  a fixed budget needs. It became the main job's many-body block.
- **One read-out or a shared self-connection** (`mace-final-readout`, `mace-linear-self`): no
  difference larger than the seed spread at 180 CPU-s (89.0 ± 3.8 and 88.7 ± 4.0 against 94.1 ± 3.7).
- **A lower-degree atomic basis buys steps but not accuracy.** On the Xeon at 540 CPU-s, the
  atomic basis up to L = 2 (`main-basis-l2`) takes 0.69x the CPU per step of the main job (3066–3720
  steps against 2450–2732) and gives 45.1 ± 1.4 against 44.3 ± 3.5 meV/Å; harmonics and basis
  up to L = 2 (`main-sh2`, 0.66x per step) give 44.7 ± 1.3. 35 to 40% more steps, no better forces:
  the L = 3 basis learns more per step, so the main job keeps it.
- **More steps help the main job most:** 4500 steps (`main-4500`, 950–1050 CPU-s here) reach
  35.5 ± 3.3 meV/Å. At 540 CPU-s the main job's seeds 0, 1 and 2 give 40.3, 46.2 and 46.6 meV/Å.
- **Cosine decay over the CPU budget** (`main-budget-cosine`, `scheduler.name: budget_cosine`) instead
  of the plateau schedule: 44.7 ± 1.6 against 44.3 ± 3.5 meV/Å, no gain. These runs made fewer
  steps (2109–2250 against 2450–2732); the schedule itself costs about 11 µs a step, so the cause
  was not found.
- **Batches of 3 instead of 5** (`main-batch-3`): 43.9 ± 5.4 against 44.3 ± 3.5 meV/Å, E 2.0 ± 0.9
  against 1.4 ± 0.3 meV/atom: no gain beyond the spread, energies worse. Seeds 0 and 1 made 4084
  and 4100 steps (38.1, 44.8); seed 2 ran beside two other training jobs and made 3620 (48.7).
- **cp messages** (`main-4500-cp-message`, one seed) were worse than cg at equal steps: 45.1.
- **Retained freed memory** (`main-retain`, `trainer.retain_freed_memory`): glibc's defaults unmap the
  per-edge tensors after every step and fault them in again (15.8k page faults and 25 ms of system
  time per step, measured alone). Kept, 2699–2745 steps and 43.4 ± 2.7 meV/Å against 2450–2732 and
  44.3 ± 3.5: a few percent more steps in the two-at-a-time runs, within the spread.
- **A 4.5 Å cutoff** (`main-retain-cutoff-4.5`): 2859–3033 steps, 42.0 ± 1.8 against 43.4 ± 2.7 meV/Å,
  within the spread; the main job keeps 5 Å, the cutoff of the published 3BPA models.
- **A compiled training step** (`main-compile`, `trainer.compile: true`): energy and forces traced into
  one graph and compiled, 0.12 s per step against 0.18–0.20 s eager (measured alone). About 100 of the
  540 CPU-s go to the compiler, and the runs still make 3198–3391 steps against 2699–2745, reaching
  39.9 ± 3.0 meV/Å (seeds 0-4: 35.8, 44.0, 39.7, 38.9, 41.3) and E 1.7 ± 0.6 meV/atom (seed 4:
  2.63). Seeds 0 and 1 ran while a 6-minute test run shared the machine. Its clock left the compiler's
  processes out (about 90 CPU-s more than the budget).
- **One C++ unit with vector code** (`main-compile-one-unit-vector`, compiler processes on the clock, cold):
  38.7 ± 3.3 meV/Å (36.1, 43.5, 36.0, 36.9, 40.9), E 1.4 ± 0.4 meV/atom: two F above 40.
- **Schedules and rates on top of it, 540 CPU-s, cold.** The plateau schedule never lowers the rate within
  the budget. Cosine decay to 0 (`main-compile-cosine`): 41.6, 41.5 on seeds 0, 1. Rate 0.02
  (`main-compile-lr-0.02`): 39.6 ± 4.0. EMA decay 0.995 (seed 1): 42.5. Rate 0.02 held for 80% of the
  budget, then a cosine (`main-compile-lr-0.02-wsd`): 37.2 ± 3.1, seeds 0, 1, 3 beside a test-suite run
  (2761-2851 steps). None beyond the spread: which seeds land high moves between settings.
- **wsd rerun with fused Adam** (`main-fused-wsd`, `main-fused-wsd-0.6`: decay from 80% / 60%): 40.1 ± 5.1
  and 39.0 ± 4.4; the machine slowed mid-run (seed 0: 3320-3386 steps, seeds 1-4: 2272-2515). Not shipped.
- **Fixed atom and structure counts in the compiled graph** (`main-fixed-counts`, the shipped config;
  benchmarks/compile_cost_3bpa_counts.md: cold compile 114 against 145 CPU-s, step 0.050 against 0.108):
  4097-5483 steps, F 34.7 ± 2.5 (33.1, 38.8, 34.8, 34.0, 32.5), E 1.3 ± 0.5 (max 2.20): every seed <= 40.
- **ZBL at its default switch radii** (`zbl-on` against `zbl-off`, the same overrides otherwise, run
  side by side, seed by seed, on the Xeon at a 1-minute load of 7 to 20 from other work, so both made
  far fewer steps than `main-compile`): F 51.8 ± 4.9 against 52.0 ± 5.5 meV/Å (seeds 0-2: 47.7, 57.3,
  50.5 against 47.4, 58.1, 50.4), within the seed spread. E 3.0 ± 1.3 against 2.3 ± 0.4 meV/atom:
  seeds 1 and 2 within the spread (2.44, 2.02 against 1.98, 2.73), seed 0 worse (4.54 against 2.06).
"""


def _progress(run_dir: Path) -> dict:
    """Epochs and optimizer steps completed, from the run's CSV log."""
    epochs, steps = 0, 0
    for path in run_dir.glob("csv/version_*/metrics.csv"):
        with open(path) as handle:
            for row in csv.DictReader(handle):
                if row.get("epoch"):
                    epochs = max(epochs, int(float(row["epoch"])) + 1)
                if row.get("step"):
                    steps = max(steps, int(float(row["step"])) + 1)
    return {"epochs_started": epochs, "steps": steps}


def run_one(name: str, seed: int, args: argparse.Namespace, machine: str) -> dict:
    """Train and test one (variant, seed); returns the record stored in the JSON file."""
    run_dir = args.work / f"{name}_seed{seed}_cpu{int(args.budget)}"
    overrides = VARIANTS[name][1] + [
        f"model.seed={seed}", f"trainer.seed={seed}", f"trainer.run_dir={run_dir}",
        f"trainer.max_cpu_time={args.budget}", "trainer.max_time=null", "trainer.num_threads=1",
        "trainer.progress_bar=false",
    ]  # fmt: skip
    command = ["nice", "-n", str(args.nice), equimol_command(), "train", str(acc.CONFIG), *overrides]
    args.work.mkdir(parents=True, exist_ok=True)
    run = acc.run_logged(command, args.work / f"{run_dir.name}.log", acc.one_thread_env(Path(f"{run_dir}_inductor")))
    record = {
        "variant": name, "seed": seed, "machine": machine, "budget_cpu_s": args.budget, "overrides": overrides,
        "exit_status": run["exit_status"], "cpu_s_total": run["cpu_s"], "wall_s_total": run["wall_s"],
        "load_average_start_end": run["load"], **_progress(run_dir),
    }  # fmt: skip
    metrics_path = run_dir / "test_metrics.json"
    if metrics_path.exists():
        record["test_300K"] = json.loads(metrics_path.read_text())["metrics"]
    return record


def _key(record: dict) -> str:
    return f"{record['variant']}|{record['seed']}|{int(record['budget_cpu_s'])}"


def _table(results: dict) -> str:
    by_variant: dict[tuple[str, int, str], list[dict]] = {}
    for record in results["runs"]:
        if "test_300K" in record:
            key = (record["variant"], int(record["budget_cpu_s"]), record.get("machine", results["machine"]))
            by_variant.setdefault(key, []).append(record)
    lines = [
        "# 3BPA force-accuracy ablation (2-core CPUs, one torch thread per run)",
        "",
        "Each run: `configs/3bpa_quick.yaml` with the variant's overrides, trained for a fixed budget of CPU",
        "seconds (`trainer.max_cpu_time`) or optimizer steps, tested on all 1669 frames of `test_300K`. Mean ±",
        "sample standard deviation over seeds. Made by `benchmarks/accuracy_ablation_3bpa.py`; raw records in",
        "the JSON file. Two machines: the rows of one machine compare with each other; per training step the",
        "Xeon was about 2x slower than the EPYC, so a CPU-s budget buys it fewer steps.",
        "",
        "| variant | what changes | machine | budget | seeds | steps | F RMSE (meV/Å) | E RMSE (meV/atom) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def spread(values: list[float]) -> str:
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else float("nan")
        return f"{mean:.1f} ± {std:.1f}"

    for (name, budget, machine), records in sorted(by_variant.items(), key=lambda item: (item[0][2], item[0][1])):
        forces = [1000 * r["test_300K"]["forces_rmse"] for r in records]
        energy = [1000 * r["test_300K"]["energy_per_atom_rmse"] for r in records]
        steps_done = [r["steps"] for r in records]
        seeds = ",".join(str(r["seed"]) for r in sorted(records, key=lambda r: r["seed"]))
        steps = [o.split("=", 1)[1] for o in VARIANTS[name][1] if o.startswith("trainer.max_steps=")]
        budget = f"{steps[0]} steps" if steps else f"{budget} CPU-s"
        lines.append(
            f"| `{name}` | {VARIANTS[name][0]} | {machine.split(',')[0]} | {budget} | {seeds} | "
            f"{min(steps_done)}–{max(steps_done)} | {spread(forces)} | {spread(energy)} |"
        )
    return "\n".join(lines) + "\n" + FINDINGS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", type=float, default=540.0, help="CPU seconds of training per run")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--nice", type=int, default=0, help="niceness of the training processes")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "accuracy_ablation", help="run folders")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "accuracy_ablation_3bpa", help="prefix")
    parser.add_argument("--overwrite", action="store_true", help="add to (or, with --report-from, replace) --out")
    parser.add_argument("--report-from", type=Path, help="only write --out.{json,md} from this JSON record")
    args = parser.parse_args(argv)
    args.work, out = args.work.resolve(), Path(f"{args.out}.json")
    check_outputs([out, Path(f"{args.out}.md")], args.overwrite)
    if args.report_from is not None and not args.report_from.is_file():
        fail(f"{args.report_from}: no such JSON record")
    machine = start_record()["machine"]
    source = args.report_from or out
    results = json.loads(source.read_text()) if source.exists() else {"machine": machine, "runs": []}
    done = {_key(record) for record in results["runs"] if "test_300K" in record}
    queue = [
        (name, seed) for seed in args.seeds for name in args.variants if f"{name}|{seed}|{int(args.budget)}" not in done
    ]
    lock = threading.Lock()

    def run(item: tuple[str, int]) -> None:
        name, seed = item
        record = run_one(name, seed, args, machine)
        with lock:
            results["runs"] = [r for r in results["runs"] if _key(r) != _key(record)] + [record]
            write_json(args.out, results)
        if "test_300K" not in record:
            raise RuntimeError(f"exit {record['exit_status']}, no test metrics; its log is in {args.work}")
        forces = record["test_300K"]["forces_rmse"]
        print(f"{name} seed {seed}: F RMSE {1000 * forces:.1f} meV/Å, {record['epochs_started']} epochs")

    failures = [] if args.report_from else acc.run_queue(queue, args.parallel, run)["failures"]
    acc.save_report(args.out, results, _table(results).split("\n"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
