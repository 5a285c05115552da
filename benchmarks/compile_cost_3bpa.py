"""Where the compiled training step's cold compilation spends its CPU time, for the README's main job.

The model of ``configs/3bpa_quick.yaml`` (``auto`` statistics from its training split) and its compiled step
as the trainer builds it (:class:`equimol.train.compiled_forces.CompiledForces`: ``make_fx`` of energy and
forces, then ``torch.compile``) run training steps (forces loss, Adam) on the config's batches. Each setting
of Inductor's options runs in a fresh process, one torch thread, with an emptied Inductor cache and a
``TMPDIR`` inside it (``_accuracy_3bpa.one_thread_env``). Recorded per setting: CPU seconds of the first step
(the compilation) in this process and in the compiler processes it waited for (``RUSAGE_CHILDREN``), the
``make_fx`` trace within it; the compiler's phase timers (``torch._dynamo.utils.compile_times``: wall seconds,
CPU seconds only on an idle core), the compiled graphs and built libraries; the median CPU seconds of a later
compiled and of an eager step; the largest compiled - eager difference of energies and forces (first batch).

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

from _accuracy_3bpa import one_thread_env
from _common import ROOT, check_outputs, fail, markdown_table, start_record, write_json

ONE_UNIT_VECTOR = {"cpp_wrapper": True, "cpp.vec_isa_ok": True}
SETTINGS: dict[str, tuple[str, dict, bool]] = {  # name: (description, Inductor options, fixed counts)
    "default": ("Inductor's defaults: one C++ library per kernel, explicit vector code; any counts", {}, False),
    "one-unit-vector": ("one C++ unit per graph (cpp_wrapper), explicit vector code, ISA taken from the CPU's flags "
                        "(train/compiled_forces.py INDUCTOR_OPTIONS); one graph for any atom and structure counts",
                        ONE_UNIT_VECTOR, False),
    "one-unit-scalar": ("one C++ unit per graph (cpp_wrapper), scalar loops (cpp.vec_isa_ok false); any counts",
                        {"cpp_wrapper": True, "cpp.vec_isa_ok": False}, False),
    "one-unit-vector-fixed-counts": ("`one-unit-vector`, fixed counts: 5 x 27 atoms (shipped)", ONE_UNIT_VECTOR, True),
}  # fmt: skip
PHASES = ("bytecode_tracing", "aot_trace_joint_graph", "GraphLowering.run", "Scheduler.__init__", "Scheduler.codegen",
          "compile_file")  # fmt: skip


def _cpu() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of the child processes it waited for."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def measure(setting: str, steps: int) -> dict:
    """One setting, in this (fresh) process: the record described in the module docstring."""
    import itertools
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
    config = load_config(ROOT / "configs" / "3bpa_quick.yaml")
    L.seed_everything(0, verbose=False)
    data = ShardedAtomsDataModule.from_config(config.data)
    data.use_physical_terms(physical_terms(config.model))
    data.setup("fit")
    references = None if data.element_references is None else data.element_references.as_dict()
    model_config = resolve_model_config(config.model, data)
    module = PotentialModule(model_config, config.loss, config.optimizer, label_references=references)
    model = module.model.train()
    batches = list(itertools.islice(data.train_dataloader(), 2 * steps + 7))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    compiled_forces.INDUCTOR_OPTIONS = options = SETTINGS[setting][1]
    trace, trace_cpu = compiled_forces.trace_forces, []

    def timed_trace(*args):
        start = _cpu()[0]
        graph = trace(*args)
        trace_cpu.append(_cpu()[0] - start)
        return graph

    compiled_forces.trace_forces = timed_trace
    compiled = compiled_forces.CompiledForces(model, fixed_counts=SETTINGS[setting][2])

    def eager(batch):
        return model(batch, compute_forces=True)

    def step(batch, predict) -> float:
        start = time.process_time()
        loss, _ = weighted_loss(predict(batch), batch, module.target_energy(batch), module.training_loss_config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.process_time() - start

    compiled(batches[0])  # the eager model: CompiledForces compiles at the second batch
    before, first, after = _cpu(), compiled(batches[1]), _cpu()
    reference = eager(batches[1])
    difference = {name: [float((first[name] - reference[name]).abs().max()), float(reference[name].abs().max())]
                  for name in ("energy", "forces")}  # fmt: skip
    for batch in batches[2:7]:
        step(batch, compiled)
    compiled_steps = [step(batch, compiled) for batch in batches[7 : 7 + steps]]
    eager_steps = [step(batch, eager) for batch in batches[7 + steps :]]
    end = _cpu()
    timers = dict(zip(*dynamo_utils.compile_times("csv", aggregate=True)))
    cache, tmp = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]), Path(os.environ["TMPDIR"])
    return {
        "setting": setting, "options": options,
        "compile_cpu_s": {"process": after[0] - before[0], "compiler_processes": after[1] - before[1]},
        "make_fx_cpu_s": trace_cpu[0], "compiler_processes_after_first_step_cpu_s": end[1] - after[1],
        "phase_wall_s": {name: float(timers[name]) for name in PHASES if name in timers},
        "graphs": dynamo_utils.counters["stats"]["unique_graphs"],
        "libraries": sum(1 for path in cache.rglob("*.so") if not path.is_relative_to(tmp)),
        "compiled_step_s": statistics.median(compiled_steps), "eager_step_s": statistics.median(eager_steps),
        "steps_each": steps, "max_abs_difference_and_scale": difference,
    }  # fmt: skip


def run_setting(setting: str, args: argparse.Namespace) -> dict:
    """``measure`` in a child process with a cold Inductor cache and TMPDIR of its own."""
    command = [sys.executable, __file__, "--child", setting, "--steps", str(args.steps)]
    with tempfile.TemporaryDirectory(prefix="compile_cost_") as folder:
        env = one_thread_env(Path(folder) / "inductor")
        run = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if run.returncode != 0:
        fail(f"setting {setting}: exit {run.returncode}: {run.stderr.strip().splitlines()[-1:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


COLUMNS = {  # header: the cell of run r (d: the run of the default setting, or None; "total": the cold compile)
    "setting": lambda r, d: f"`{r['setting']}`",
    "make_fx CPU-s": lambda r, d: f"{r['make_fx_cpu_s']:.0f}",
    "compile CPU-s, process (incl. make_fx)": lambda r, d: f"{r['compile_cpu_s']['process']:.0f}",
    "compiler processes CPU-s": lambda r, d: f"{r['compile_cpu_s']['compiler_processes']:.0f}",
    "cold compile CPU-s": lambda r, d: f"{r['total']:.0f}",
    "vs default": lambda r, d: "" if d is None else f"{r['total'] / d['total']:.2f}",
    "libraries": lambda r, d: r["libraries"],
    "compiled step s": lambda r, d: f"{r['compiled_step_s']:.3f}",
    "eager step s": lambda r, d: f"{r['eager_step_s']:.3f}",
    "compiled / eager": lambda r, d: f"{r['compiled_step_s'] / r['eager_step_s']:.2f}",
    "max abs F diff / max abs F (eV/Å)":
        lambda r, d: "{:.1e} / {:.1e}".format(*r["max_abs_difference_and_scale"]["forces"]),
}  # fmt: skip


def report(record: dict) -> str:
    """The Markdown report of a JSON record."""
    runs = [run | {"total": sum(run["compile_cpu_s"].values())} for run in record["runs"]]
    default = next((r for r in runs if r["setting"] == "default"), None)
    phases = (f"`{r['setting']}`: " + ", ".join(f"{k} {v:.0f}" for k, v in r["phase_wall_s"].items()) for r in runs)
    return "\n".join([
        "# Cold compilation of the main job's compiled step (benchmarks/compile_cost_3bpa.py)",
        "",
        f"Machine: {record['machine']}; one torch thread; load average at start {record['load_average_start']}, "
        f"at end {record['load_average_end']}. Each setting in a fresh process with an empty Inductor cache and "
        "TMPDIR; step times are medians of CPU seconds per training step (forces loss, Adam), compiled and eager "
        "in the same process.",
        "",
        *markdown_table(COLUMNS, ([cell(r, default) for cell in COLUMNS.values()] for r in runs)),
        "",
        "Settings: " + "; ".join(f"`{name}`: {SETTINGS[name][0]}" for name in record["settings"]) + ".",
        "",
        "Phase timers (wall seconds; CPU seconds only on an idle core): " + "; ".join(phases),
        "",
        *([record["note"], ""] if "note" in record else []),
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=40, help="timed compiled steps, and as many eager ones")
    parser.add_argument("--out", type=Path, help="prefix of the .json and .md results")
    parser.add_argument("--overwrite", action="store_true", help="replace existing results")
    parser.add_argument("--report-from", type=Path, help="only write --out.md from this JSON record")
    parser.add_argument("--child", choices=list(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.steps)))
        return 0
    if args.out is None:
        fail("--out PREFIX is required")
    markdown = Path(f"{args.out}.md")
    check_outputs([Path(f"{args.out}.json"), markdown], args.overwrite)
    if args.report_from is not None:
        if not args.report_from.is_file():
            fail(f"{args.report_from}: no such JSON record")
        markdown.write_text(report(json.loads(args.report_from.read_text())), encoding="utf-8")
        return 0
    record = {**start_record(), "settings": args.settings, "runs": []}
    for setting in args.settings:
        record["runs"].append(run_setting(setting, args))
        print(json.dumps(record["runs"][-1]), flush=True)
    record["load_average_end"] = os.getloadavg()
    write_json(args.out, record)
    markdown.write_text(report(record), encoding="utf-8")
    print(markdown.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
