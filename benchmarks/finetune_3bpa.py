"""Fine-tuning vs training from scratch on 3BPA, at the same number of optimizer steps, tested on test_600K.

The pretrained model is a run on train_300K (e.g. ``runs/committee_3bpa_s400/member_0/model.pt``, 400 steps,
seed 0, configs/3bpa_quick.yaml). For each seed this script then runs, one after another (one thread, nice):

* ``finetune``: ``model.init_from=<pretrained>`` trained on train_mixedT for ``--steps`` steps;
* ``scratch``: the same config, same seed and steps, from a fresh initialisation;

both with the pretraining run's own ``config.yaml`` (same architecture and optimizer), the model's
``auto`` statistics taken from train_mixedT;

and evaluates the pretrained model itself; every model is tested on every 8th frame of test_600K (268 frames;
CPU time on the shared 2-core machine). Results go to ``--json`` (default ``benchmarks/finetune_3bpa.json``,
replaced only with ``--overwrite``); ``benchmarks/finetune_3bpa.md`` is written from them by hand with the
machine and load.

    python benchmarks/finetune_3bpa.py runs/committee_3bpa_s400/member_0/model.pt --steps 400 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import torch
from _common import SHARED_DATA, equimol_command, parse_json_out, strided_loader
from equimol.train.checkpoints import read_checkpoint
from equimol.train.evaluate import evaluate

from equimol.export import load_model
from equimol.utils.machine import describe_machine, machine_label

DATA = SHARED_DATA / "3bpa"
STRIDE = 8


def _train(base_config: Path, run_dir: Path, steps: int, seed: int, extra: list[str]) -> dict:
    command = [
        "nice", "-n", "5", equimol_command(), "train", str(base_config),
        "data.train=3bpa/train_mixedT.xyz", "trainer.test_after_fit=false", "model.avg_num_neighbors=auto",
        "model.energy_shift=auto", "model.energy_scale=auto",
        f"trainer.max_steps={steps}", "trainer.max_time=3000", "trainer.early_stopping_patience=null",
        f"trainer.seed={seed}", f"model.seed={seed}", f"trainer.run_dir={run_dir}", "trainer.progress_bar=false",
        *extra,
    ]  # fmt: skip
    start, load = time.time(), os.getloadavg()[0]
    subprocess.run(command, check=True)
    wall = round(time.time() - start, 1)
    steps = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"]
    metrics = _test(run_dir / "model.pt")
    return {"test_600K": metrics, "steps": int(steps), "wall_s": wall, "load_at_start": round(load, 2)}


def _test(model_file: Path) -> dict:
    """Errors on every STRIDE-th frame of test_600K (eV, eV/Å; see equimol.train.evaluate)."""
    model = load_model(model_file)
    return evaluate(model, strided_loader(DATA / "test_600K.xyz", model, STRIDE)).metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("pretrained")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default="runs/finetune_3bpa", help="folder of the training runs")
    args = parse_json_out(parser, flag="--json", default=Path(__file__).with_suffix(".json"))
    out = Path(args.out).resolve()
    pretrained = Path(args.pretrained).resolve()
    base_config = pretrained.parent / "config.yaml"  # the pretraining run's own config: same architecture
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    results = {
        "machine": machine_label(describe_machine()), "pretrained": str(pretrained),
        "pretrained_test_600K": _test(pretrained), "steps": args.steps, "test_stride": STRIDE, "runs": {},
    }  # fmt: skip
    for seed in args.seeds:
        for name, extra in (("finetune", [f"model.init_from={pretrained}"]), ("scratch", [])):
            run = f"{name}_seed{seed}"
            results["runs"][run] = _train(base_config, out / run, args.steps, seed, extra)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
