"""Worker processes of the 3BPA accuracy benchmarks (``_accuracy_3bpa.py``), one per code, each in its own
virtual environment.

Commands (started by the drivers, not by hand)::

    python (equimol's)  _accuracy_3bpa_workers.py equimol-train CURVE.jsonl -- train CONFIG [overrides]
    python (MACE's)     _accuracy_3bpa_workers.py mace-train --budget SECONDS --curve CURVE.jsonl \
                            [--snapshots S1,S2 --snapshot-dir DIR] -- <run_train args>
    either python       _accuracy_3bpa_workers.py timing {equimol,mace} MODEL STRUCTURES.xyz  # JSON lines, stdin/out

Only the standard library, numpy and ASE are imported at module level, so both environments can run it.

**Learning curves.** Each training process appends one JSON line per validation to CURVE: epoch,
training steps, CPU seconds (``time.process_time()``, this process) and wall seconds since the start of
fitting, and the validation RMSEs (eV/Å per force component, eV/atom). equimol's come from a Lightning
callback added to ``equimol.train.run._callbacks``; MACE's from a wrapper of ``valid_err_log``.

**CPU-time budget for MACE, without modifying MACE.** mace 0.3.16 has no time budget, so
``mace-train`` runs MACE's own ``mace.cli.run_train.main`` in this process after wrapping functions of
``mace.tools.train`` (module attributes that MACE looks up at call time):

* ``train_one_epoch``: the clock starts at its first call, i.e. at the first training batch, after
  data loading and MACE's initial validation (equimol's ``trainer.max_cpu_time`` also counts from the
  start of fitting). The epoch's data loader is wrapped so that no batch is taken once the budget is
  spent: the epoch ends early, and MACE validates it and saves a checkpoint if the validation loss
  improved, as Lightning does for equimol when ``max_cpu_time`` stops the fit after a batch. If the
  budget is spent when the next epoch would start, ``BudgetSpent`` is raised before any batch.
* the training loop (``mace.tools.train``, as ``run_train`` calls it) catches ``BudgetSpent`` and
  returns normally, so ``run_train`` carries on exactly as after its last epoch: it loads the latest
  checkpoint, which is the best on validation (MACE deletes the previous one at each improvement) and
  holds the EMA weights (MACE saves inside ``ema.average_parameters()``), evaluates it and saves
  ``<model_dir>/<name>.model``: the model MACE itself ships.

Both budgets are checked after each training batch (one batch of 5 structures overshoots by a fraction
of a CPU second). Lightning also validates after the stopping batch; MACE validates at the end of the
shortened epoch, the same.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import ase.io
import numpy as np

MARK = "TIMING "  # prefix of the timing worker's answers (libraries may print to stdout too)


def _append(path: str, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def equimol_train(curve: str, argv: list[str]) -> int:
    """``equimol`` CLI ``argv`` with a callback that appends every validation to ``curve``."""
    import equimol.train.run as run
    import lightning as L
    from equimol.train.cpu_budget import CPUTimeBudget, cpu_seconds  # the clock of max_cpu_time (children included)

    from equimol.cli import main

    class CurveRecorder(L.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            # a resumed run continues the clock of trainer.max_cpu_time, saved in its checkpoint
            budget = next((c for c in trainer.callbacks if isinstance(c, CPUTimeBudget)), None)
            before = budget.elapsed() if budget is not None else 0.0
            self.cpu, self.wall = cpu_seconds() - before, time.perf_counter()

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking or not hasattr(self, "cpu"):
                return
            metrics = trainer.callback_metrics
            record = {"epoch": trainer.current_epoch, "steps": trainer.global_step}
            record |= {"cpu_s": cpu_seconds() - self.cpu, "wall_s": time.perf_counter() - self.wall}
            record["val_forces_rmse"] = float(metrics["val/forces_rmse"])
            record["val_energy_per_atom_rmse"] = float(metrics["val/energy_per_atom_rmse"])
            _append(curve, record)

        def on_train_end(self, trainer, pl_module) -> None:
            cpu, wall = cpu_seconds() - self.cpu, time.perf_counter() - self.wall
            _append(curve, {"event": "fit_end", "steps": trainer.global_step, "cpu_s": cpu, "wall_s": wall})

    callbacks = run._callbacks
    run._callbacks = lambda config, run_dir: [*callbacks(config, run_dir), CurveRecorder()]
    code = main(argv)
    _append(curve, {"event": "exit", "process_cpu_s": time.process_time()})
    return code


class BudgetSpent(Exception):
    """The CPU-time budget ran out between two epochs."""


def mace_train(budget: float, curve: str, mace_argv: list[str], snapshots: list[float] = (),
               snapshot_dir: str | None = None) -> int:  # fmt: skip
    """MACE's ``run_train`` with ``mace_argv`` under a CPU-time budget (see the module docstring).

    At each of ``snapshots`` CPU seconds (checked before each batch, as the budget is) the model with its
    EMA weights is saved as ``snapshot_dir/<name>_cpu<seconds>.model`` (``torch.save`` of the module, as
    MACE saves its final model), and ``snapshot_dir/steps.json`` records the optimizer steps made by then.
    """
    import logging

    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    import mace.tools
    from mace.cli.run_train import main

    loop = importlib.import_module("mace.tools.train")
    clock: dict = {"cpu": None, "wall": None, "steps": 0}
    pending, state, steps_at = sorted(snapshots), {}, {}
    name = next((a.split("=", 1)[1] for a in mace_argv if a.startswith("--name=")), "mace")

    def save_snapshots() -> None:
        from contextlib import nullcontext

        while pending and elapsed()[0] >= pending[0]:
            target = pending.pop(0)
            ema = state.get("ema")
            with ema.average_parameters() if ema is not None else nullcontext():
                torch.save(state["model"], Path(snapshot_dir) / f"{name}_cpu{target:g}.model")
            steps_at[f"{target:g}"] = clock["steps"]
            (Path(snapshot_dir) / "steps.json").write_text(json.dumps(steps_at))

    def elapsed() -> tuple[float, float]:
        return time.process_time() - clock["cpu"], time.perf_counter() - clock["wall"]

    def budgeted(loader):
        for batch in loader:
            save_snapshots()
            if elapsed()[0] >= budget:
                return
            clock["steps"] += 1
            yield batch

    one_epoch, log, whole = loop.train_one_epoch, loop.valid_err_log, mace.tools.train

    def train_one_epoch(*args, **kwargs):
        if clock["cpu"] is None:
            clock["cpu"], clock["wall"] = time.process_time(), time.perf_counter()
        elif elapsed()[0] >= budget:
            raise BudgetSpent
        kwargs["data_loader"] = budgeted(kwargs["data_loader"])
        return one_epoch(*args, **kwargs)

    def valid_err_log(valid_loss, eval_metrics, logger, log_errors, epoch=None, valid_loader_name="Default"):
        if epoch is not None and clock["cpu"] is not None:
            cpu, wall = elapsed()
            record = {"epoch": int(epoch), "steps": clock["steps"], "cpu_s": cpu, "wall_s": wall}
            record["val_forces_rmse"] = float(eval_metrics["rmse_f"])
            record["val_energy_per_atom_rmse"] = float(eval_metrics["rmse_e_per_atom"])
            _append(curve, record)
        return log(valid_loss, eval_metrics, logger, log_errors, epoch, valid_loader_name)

    def train_loop(*args, **kwargs):
        state["model"], state["ema"] = kwargs["model"], kwargs.get("ema")
        if snapshot_dir is not None:
            Path(snapshot_dir).mkdir(parents=True, exist_ok=True)
        try:
            whole(*args, **kwargs)
        except BudgetSpent:
            logging.info(f"CPU-time budget of {budget} s spent: training complete")
        save_snapshots()  # a snapshot at the budget itself is taken after the last batch
        cpu, wall = elapsed() if clock["cpu"] is not None else (0.0, 0.0)
        _append(curve, {"event": "fit_end", "steps": clock["steps"], "cpu_s": cpu, "wall_s": wall})

    loop.train_one_epoch, loop.valid_err_log, mace.tools.train = train_one_epoch, valid_err_log, train_loop
    sys.argv = ["mace_run_train", *mace_argv]
    main()
    _append(curve, {"event": "exit", "process_cpu_s": time.process_time()})
    return 0


def timing(side: str, model: str, structures: str, noise: float = 0.005, seed: int = 0) -> None:
    """Answer timing requests on stdin/stdout: energy+forces of one structure through equimol's or MACE's
    (float32) ASE calculator.

    Each request is a JSON line ``{"structure": i, "threads": t, "calls": k}``; the answer is a line
    ``TIMING {"times": [...]}`` (seconds per call). Every call moves the atoms to new positions
    (base + Gaussian noise of ``noise`` Å, the same sequence in every worker) so the calculator
    recomputes, as in MD; the neighbour list is whatever the calculator does between such steps.
    """
    import torch

    if side == "mace":
        from mace.calculators import MACECalculator

        make_calculator = lambda: MACECalculator(model_paths=model, device="cpu", default_dtype="float32")  # noqa: E731
    else:
        from equimol.calculator import EquimolCalculator

        make_calculator = lambda: EquimolCalculator(model=model)  # noqa: E731
    torch.set_num_interop_threads(1)
    frames = ase.io.read(structures, ":")
    bases = [atoms.positions.copy() for atoms in frames]
    for atoms in frames:  # one calculator per structure: each keeps its own neighbour-list state
        atoms.calc = make_calculator()
    rng = np.random.default_rng(seed)
    print(MARK + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        torch.set_num_threads(int(request["threads"]))
        atoms, base, times = frames[request["structure"]], bases[request["structure"]], []
        for _ in range(int(request["calls"])):
            atoms.positions = base + rng.normal(0.0, noise, base.shape)
            start = time.perf_counter()
            atoms.get_forces()
            atoms.get_potential_energy()
            times.append(time.perf_counter() - start)
        print(MARK + json.dumps({"times": times}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    equimol = commands.add_parser("equimol-train")
    equimol.add_argument("curve", help="JSON-lines file for the validation curve")
    equimol.add_argument("argv", nargs=argparse.REMAINDER, help="-- then equimol CLI arguments")
    mace = commands.add_parser("mace-train")
    mace.add_argument("--budget", type=float, required=True, help="CPU seconds of training")
    mace.add_argument("--curve", required=True, help="JSON-lines file for the validation curve")
    mace.add_argument("--snapshots", default="", help="comma-separated CPU seconds of EMA snapshots")
    mace.add_argument("--snapshot-dir", help="folder of the snapshot model files")
    mace.add_argument("argv", nargs=argparse.REMAINDER, help="-- then mace run_train arguments")
    worker = commands.add_parser("timing")
    worker.add_argument("side", choices=("equimol", "mace"))
    worker.add_argument("model")
    worker.add_argument("structures")
    args = parser.parse_args()
    if args.command == "timing":
        timing(args.side, args.model, args.structures)
        return 0
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if args.command == "equimol-train":
        return equimol_train(args.curve, argv)
    snapshots = [float(t) for t in args.snapshots.split(",") if t]
    return mace_train(args.budget, args.curve, argv, snapshots, args.snapshot_dir)


if __name__ == "__main__":
    sys.exit(main())
