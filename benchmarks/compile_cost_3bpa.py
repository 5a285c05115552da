"""Where the compiled training step's cold compilation spends its CPU time, for the README's main job.

Builds the model of ``configs/3bpa_quick.yaml`` (its ``auto`` statistics from the training split) and the
compiled step as the trainer does (:class:`equimol.train.compiled_forces.CompiledForces`: ``make_fx`` of
energy and forces, then ``torch.compile``), and runs training steps (forces loss, Adam) on its batches.
Each setting of Inductor's options runs in a fresh process with a fresh ``TMPDIR`` (Inductor's precompiled
headers go there) and an empty Inductor cache in it, one torch thread. Per setting:

* CPU seconds of the first step (the compilation): this process, and the compiler processes it waited for
  (``RUSAGE_CHILDREN``); the ``make_fx`` trace within it;
* the compiler's own phase timers (``torch._dynamo.utils.compile_times``: wall seconds, equal to CPU seconds
  only on an idle core), the number of compiled graphs and of built libraries;
* the median CPU seconds of a later compiled step and of an eager step in the same process, and their ratio;
* the largest difference between the compiled and the eager energies and forces on the first batch.

Usage::

    python benchmarks/compile_cost_3bpa.py --out PREFIX [--settings default one-unit-vector] [--overwrite]
    python benchmarks/compile_cost_3bpa.py --report-from PREFIX.json --out PREFIX --overwrite   # the table only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, check_outputs, fail, markdown_table, start_record, write_json

# Inductor options per setting
SETTINGS: dict[str, tuple[str, dict]] = {
    "default": ("Inductor's defaults: one C++ library per kernel, explicit vector code", {}),
    "one-unit-vector": (
        "one C++ unit per graph (cpp_wrapper), explicit vector code, ISA taken from the CPU's flags "
        "(train/compiled_forces.py INDUCTOR_OPTIONS, shipped)",
        {"cpp_wrapper": True, "cpp.vec_isa_ok": True},
    ),
    "one-unit-scalar": (
        "one C++ unit per graph (cpp_wrapper), scalar loops (cpp.vec_isa_ok false)",
        {"cpp_wrapper": True, "cpp.vec_isa_ok": False},
    ),
}
PHASES = (
    "bytecode_tracing",
    "aot_trace_joint_graph",
    "GraphLowering.run",
    "Scheduler.__init__",
    "Scheduler.codegen",
    "compile_file",
)


def _cpu() -> tuple[float, float]:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def measure(setting: str, config_path: Path, steps: int) -> dict:
    """One setting, in this (fresh) process: the record described in the module docstring."""
    import statistics
    import time

    import lightning as L
    import torch
    import torch._dynamo.utils as dynamo_utils
    from equimol.train import compiled_forces
    from equimol.train.config import load_config
    from equimol.train.losses import weighted_loss
    from equimol.train.module import PotentialModule
    from equimol.train.run import physical_terms, resolve_model_config
    from equimol.train.sharding import ShardedAtomsDataModule

    from equimol.utils.allocator import retain_freed_memory

    torch.set_num_threads(1)
    retain_freed_memory()
    config = load_config(config_path)
    L.seed_everything(0, verbose=False)
    data = ShardedAtomsDataModule.from_config(config.data)
    data.use_physical_terms(physical_terms(config.model))
    data.setup("fit")
    references = data.element_references
    module = PotentialModule(
        model=resolve_model_config(config.model, data),
        loss=config.loss,
        optimizer=config.optimizer,
        label_references=None if references is None else references.as_dict(),
    )
    model = module.model.train()
    batches = []
    for batch in data.train_dataloader():
        batches.append(batch)
        if len(batches) == 2 * steps + 6:
            break
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    options = SETTINGS[setting][1]
    compiled_forces.INDUCTOR_OPTIONS = options
    trace_cpu = []
    trace = compiled_forces.trace_forces

    def timed_trace(*args):
        start = _cpu()[0]
        graph = trace(*args)
        trace_cpu.append(_cpu()[0] - start)
        return graph

    compiled_forces.trace_forces = timed_trace
    compiled = compiled_forces.CompiledForces(model)

    def step(batch, predict) -> float:
        start = time.process_time()
        loss, _ = weighted_loss(predict(batch), batch, module.target_energy(batch), module.training_loss_config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.process_time() - start

    before = _cpu()
    first = compiled(batches[0])
    after = _cpu()
    eager = model(batches[0], compute_forces=True)
    difference = {
        name: [float((first[name] - eager[name]).abs().max()), float(eager[name].abs().max())]
        for name in ("energy", "forces")
    }
    for batch in batches[1:6]:
        step(batch, compiled)
    compiled_steps = [step(batch, compiled) for batch in batches[6 : 6 + steps]]
    eager_steps = [step(batch, lambda b: model(b, compute_forces=True)) for batch in batches[6 + steps : 6 + 2 * steps]]
    end = _cpu()
    names, values = dynamo_utils.compile_times("csv", aggregate=True)
    timers = dict(zip(names, values))
    graphs = dynamo_utils.counters["stats"]["unique_graphs"]
    cache = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    return {
        "setting": setting,
        "options": options,
        "compile_cpu_s": {"process": after[0] - before[0], "compiler_processes": after[1] - before[1]},
        "make_fx_cpu_s": trace_cpu[0],
        "compiler_processes_after_first_step_cpu_s": end[1] - after[1],
        "phase_wall_s": {name: float(timers[name]) for name in PHASES if name in timers},
        "graphs": graphs,
        "libraries": sum(1 for _ in cache.rglob("*.so")),
        "compiled_step_s": statistics.median(compiled_steps),
        "eager_step_s": statistics.median(eager_steps),
        "steps_each": steps,
        "max_abs_difference_and_scale": difference,
    }


def run_setting(setting: str, args: argparse.Namespace) -> dict:
    """``measure`` in a child process with a fresh TMPDIR and Inductor cache."""
    with tempfile.TemporaryDirectory(prefix="compile_cost_") as folder:
        env = {
            **os.environ,
            "TMPDIR": folder,
            "TORCHINDUCTOR_CACHE_DIR": str(Path(folder) / "inductor"),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        command = [
            sys.executable,
            __file__,
            "--child",
            setting,
            "--config",
            str(args.config),
            "--steps",
            str(args.steps),
        ]
        run = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if run.returncode != 0:
        fail(f"setting {setting}: exit {run.returncode}: {run.stderr.strip().splitlines()[-1:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def report(record: dict) -> list[str]:
    rows = []
    default = next((r for r in record["runs"] if r["setting"] == "default"), None)
    for r in record["runs"]:
        cpu = r["compile_cpu_s"]
        total = cpu["process"] + cpu["compiler_processes"]
        ratio = "" if default is None else f"{total / sum(default['compile_cpu_s'].values()):.2f}"
        forces = r["max_abs_difference_and_scale"]["forces"]
        rows.append(
            [
                f"`{r['setting']}`",
                f"{r['make_fx_cpu_s']:.0f}",
                f"{cpu['process']:.0f}",
                f"{cpu['compiler_processes']:.0f}",
                f"{total:.0f}",
                ratio,
                r["libraries"],
                f"{r['compiled_step_s']:.3f}",
                f"{r['eager_step_s']:.3f}",
                f"{r['compiled_step_s'] / r['eager_step_s']:.2f}",
                f"{forces[0]:.1e} / {forces[1]:.1e}",
            ]
        )
    header = [
        "setting",
        "make_fx CPU-s",
        "compile CPU-s, process (incl. make_fx)",
        "compiler processes CPU-s",
        "cold compile CPU-s",
        "vs default",
        "libraries",
        "compiled step s",
        "eager step s",
        "compiled / eager",
        "max abs F diff / max abs F (eV/Å)",
    ]
    lines = [
        "# Cold compilation of the main job's compiled step (benchmarks/compile_cost_3bpa.py)",
        "",
        f"Machine: {record['machine']}; one torch thread; load average at start {record['load_average_start']}, "
        f"at end {record['load_average_end']}. Each setting in a fresh process with an empty Inductor cache and "
        "TMPDIR; step times are medians of CPU seconds per training step (forces loss, Adam), compiled and eager "
        "in the same process.",
        "",
        *markdown_table(header, rows),
        "",
        "Settings: " + "; ".join(f"`{name}`: {SETTINGS[name][0]}" for name in record["settings"]) + ".",
        "",
        "Phase timers (wall seconds; CPU seconds only on an idle core): "
        + "; ".join(
            f"`{r['setting']}`: " + ", ".join(f"{k} {v:.0f}" for k, v in r["phase_wall_s"].items())
            for r in record["runs"]
        ),
        "",
        *([record["note"], ""] if "note" in record else []),
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "3bpa_quick.yaml")
    parser.add_argument("--steps", type=int, default=40, help="timed compiled steps, and as many eager ones")
    parser.add_argument("--out", type=Path, help="prefix of the .json and .md results")
    parser.add_argument("--overwrite", action="store_true", help="replace existing results")
    parser.add_argument("--report-from", type=Path, help="only write --out.md from this JSON record")
    parser.add_argument("--child", choices=list(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.config, args.steps)))
        return 0
    if args.out is None:
        fail("--out PREFIX is required")
    check_outputs([Path(f"{args.out}.json"), Path(f"{args.out}.md")], args.overwrite)
    if args.report_from is not None:
        if not args.report_from.is_file():
            fail(f"{args.report_from}: no such JSON record")
        Path(f"{args.out}.md").write_text("\n".join(report(json.loads(args.report_from.read_text()))), encoding="utf-8")
        return 0
    record = {**start_record(), "settings": args.settings, "runs": []}
    for setting in args.settings:
        record["runs"].append(run_setting(setting, args))
        print(json.dumps(record["runs"][-1]), flush=True)
    record["load_average_end"] = os.getloadavg()
    write_json(args.out, record)
    Path(f"{args.out}.md").write_text("\n".join(report(record)), encoding="utf-8")
    print(Path(f"{args.out}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
