"""The CPU figures behind ``benchmarks/scaling.md``: training throughput of the OC20 model, and LMDB read rates.

SYNTHETIC SCALE TEST DATA (``benchmarks/scale_make_lmdb.py``): rattled copies of the shipped OC20
frames, which have the atom counts and neighbor densities of OC20 S2EF frames (33-185 atoms).

1. **Training**: ``equimol.train.run.train`` with the model section of ``configs/oc20_s2ef.yaml``
   (64 channels, lmax 2, 3 layers, cg, float32), ``max_edges: 20000`` batches of the synthetic
   10k LMDB, one thread; the wall time of optimizer steps 3 to ``--steps`` (forward, forces by
   autograd, backward, AdamW) and the structures they held, per wall second and per CPU second of
   the process (the CPU figure is what the shared machine's load does not inflate).
2. **Reading**: frames per second of one process reading random frames of the 1M LMDB: the stored
   value only (``LmdbFrames.raw``: LMDB lookup + unpickle), and the whole path of a DataLoader worker
   (``AtomsDataset[i]``: + checks, labels, 6 Å neighbor list).

Usage::

    nice -n 5 python benchmarks/scale_throughput.py /work/scale --out benchmarks/scale_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPOSITORY = Path(__file__).resolve().parents[1]


def training_throughput(train_path: Path, steps: int) -> dict:
    """Structures per second of training steps 3..``steps`` (see the module docstring)."""
    import torch
    from equimol.train import module as module_file
    from equimol.train.config import validate_config
    from equimol.train.run import train

    model = yaml.safe_load((REPOSITORY / "configs" / "oc20_s2ef.yaml").read_text())["model"]
    model.update(e0s=None, energy_shift="auto")
    sizes: list[int] = []
    atoms: list[int] = []
    ends: list[float] = []
    cpu_ends: list[float] = []
    original_step = module_file.PotentialModule.training_step
    original_optimizer_step = module_file.PotentialModule.optimizer_step

    def training_step(self, batch, batch_index):
        sizes.append(int(batch.energy.shape[0]))
        atoms.append(int(batch.pos.shape[0]))
        return original_step(self, batch, batch_index)

    def optimizer_step(self, *args, **kwargs):
        out = original_optimizer_step(self, *args, **kwargs)
        ends.append(time.perf_counter())
        cpu_ends.append(time.process_time())
        return out

    module_file.PotentialModule.training_step = training_step
    module_file.PotentialModule.optimizer_step = optimizer_step
    with tempfile.TemporaryDirectory() as scratch:
        config = validate_config(
            {
                "model": model,
                "data": {
                    "train": str(train_path),
                    "val_fraction": 0.001,
                    "max_edges": 20_000,
                    "forces_on": "free",
                    "cache_dir": scratch,
                },
                "optimizer": {"name": "adamw", "amsgrad": False, "lr": 0.0005},
                "trainer": {
                    "run_dir": str(Path(scratch) / "run"),
                    "max_steps": steps,
                    "num_threads": 1,
                    "progress_bar": False,
                    "test_after_fit": False,
                    "precision": 32,
                },
            }
        )
        train(config)
    measured = slice(2, steps)  # steps 3..steps: after the first steps' allocations and caches
    seconds = ends[steps - 1] - ends[1]
    cpu_seconds = cpu_ends[steps - 1] - cpu_ends[1]
    structures, atom_count = sum(sizes[measured]), sum(atoms[measured])
    return {
        "steps_timed": steps - 2,
        "seconds": seconds,
        "structures": structures,
        "atoms": atom_count,
        "cpu_seconds": cpu_seconds,
        "structures_per_s": structures / seconds,
        "structures_per_cpu_s": structures / cpu_seconds,
        "atoms_per_cpu_s": atom_count / cpu_seconds,
        "threads": torch.get_num_threads(),
    }


def read_rates(lmdb_path: Path, count: int) -> dict:
    """Random-access frames per second of one process: stored values, and labelled graphs."""
    import torch
    from equimol.datasets.atoms_dataset import AtomsDataset, LabelSettings
    from equimol.datasets.lmdb_dataset import LmdbFrames

    frames = LmdbFrames(lmdb_path)
    dataset = AtomsDataset([lmdb_path], LabelSettings(radial_cutoff=6.0, dtype=torch.float32))
    picks = np.random.default_rng(0).integers(0, len(frames), size=2 * count)
    start, cpu = time.perf_counter(), time.process_time()
    for index in picks[:count].tolist():
        frames.raw(index)
    raw, raw_cpu = count / (time.perf_counter() - start), count / (time.process_time() - cpu)
    start, cpu = time.perf_counter(), time.process_time()
    for index in picks[count:].tolist():
        dataset[index]
    graphs, graphs_cpu = count / (time.perf_counter() - start), count / (time.process_time() - cpu)
    return {
        "frames": len(frames),
        "reads": count,
        "raw_frames_per_s": raw,
        "raw_frames_per_cpu_s": raw_cpu,
        "graphs_per_s": graphs,
        "graphs_per_cpu_s": graphs_cpu,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--out", type=Path, help="JSON record to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args()
    if args.out:
        from _common import check_outputs

        check_outputs([args.out], args.overwrite)
    load = os.getloadavg()[0]
    result = {
        "machine": f"{os.cpu_count()}-core CPU (shared), load average {load:.1f} at start",
        "read": read_rates(args.folder / "synthetic_1000000.lmdb", args.reads),
        "train": training_throughput(args.folder / "synthetic_10000.lmdb", args.steps),
        "load_end": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
