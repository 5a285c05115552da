"""Time to the first optimizer step and peak memory per process as a synthetic OC20-layout LMDB grows.

SYNTHETIC SCALE TEST (see ``benchmarks/scale_make_lmdb.py``): rattled copies of the 16 shipped
OC20 trajectories. It measures what grows with the number of frames before training starts, not
accuracy. Each run is a fresh process (``nice -n 5``): ``equimol.train.run.train`` on one LMDB with
a small model (4 channels, lmax 1, one layer; the model does not change with the data size), the
default ``data.statistics_sample`` (2000), ``max_edges`` batching (atom-count index x sampled
neighbors), a fresh statistics cache (cold start), a fixed 112-frame validation LMDB, one thread.
Sizes run interleaved (10k, 100k, 1M, 10k, ...) so that the shared machine's load falls on all
alike; the table gives medians and the load average before each run.

``first_step_s``: seconds from the process start (before imports) to the end of the first
optimizer step; ``cpu_s``: the CPU seconds (user + system) the process used by then, which the
machine's load does not inflate; ``setup_s``: the part inside ``train()`` before Lightning's fit (data, statistics,
model); ``peak_rss_mib``: ``ru_maxrss`` of the process at that moment; ``rssanon_mib`` and
``rssfile_mib``: its private memory and its mapped file pages then (``/proc/self/status``). The
LMDB is memory-mapped: reading a frame maps its pages, and the kernel's fault-around maps up to
64 KiB of already cached neighbours with each, so mapped file pages grow with the number of
distinct regions read (the statistics sample), up to a bound, and are page cache the kernel may
drop, not memory the process owns. ``--processes 2`` starts
each run under ``torchrun`` (2 processes, gloo) and reports every rank.

Usage::

    nice -n 5 python benchmarks/scale_first_step.py /work/scale --out benchmarks/scale_first_step.json
"""

from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

SIZES = (10_000, 100_000, 1_000_000)
REPOSITORY = Path(__file__).resolve().parents[1]


def _species() -> list[str]:
    import yaml

    return yaml.safe_load((REPOSITORY / "configs" / "oc20_s2ef.yaml").read_text())["model"]["species"]


def _resident() -> dict[str, float]:
    """``RssAnon`` (private memory) and ``RssFile`` (mapped file pages, here the LMDB's) now, MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {f"{name.lower()}_mib": int(fields[name].split()[0]) / 1024 for name in ("RssAnon", "RssFile")}


def child(train_path: str, val_path: str, run_dir: str, result: str) -> None:
    """One run; writes ``{rank: {...}}`` figures to ``result`` (one file per rank)."""
    import torch
    from equimol.train import module as module_file
    from equimol.train.config import validate_config
    from equimol.train.run import train

    from equimol.microbench.systems import tiny_model_section  # the tiny model of the training tests

    if "EQUIMOL_SCALE_RELEASE_EVERY" in os.environ:  # --release-every: the LMDB readers' default, for comparison
        from equimol.datasets.lmdb_dataset import LmdbFrames

        value = os.environ["EQUIMOL_SCALE_RELEASE_EVERY"]
        keys = LmdbFrames.__init__.__defaults__[0]
        LmdbFrames.__init__.__defaults__ = (keys, None if value == "none" else int(value))

    imported = time.perf_counter() - START
    marks: dict[str, float] = {}
    original = module_file.PotentialModule.optimizer_step

    def optimizer_step(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if "first_step_s" not in marks:
            marks["first_step_s"] = time.perf_counter() - START
            rank = int(os.environ.get("RANK", 0))
            figures = {
                "rank": rank,
                "import_s": imported,
                "setup_s": marks["fit_start"] - marks["train_start"],
                "first_step_s": marks["first_step_s"],
                "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                **_resident(),
                "threads": torch.get_num_threads(),
            }
            Path(f"{result}.{rank}").write_text(json.dumps(figures))
        return out

    def on_fit_start(self):
        marks["fit_start"] = time.perf_counter()

    module_file.PotentialModule.optimizer_step = optimizer_step
    module_file.PotentialModule.on_fit_start = on_fit_start
    processes = int(os.environ.get("WORLD_SIZE", 1))
    config = validate_config(
        {
            "model": tiny_model_section(_species(), radial_cutoff=6.0, e0s=None),
            "data": {
                "train": train_path,
                "val": val_path,
                "max_edges": 20_000,
                "forces_on": "free",
                "cache_dir": str(Path(run_dir) / "statistics"),
            },
            "trainer": {
                "run_dir": run_dir,
                "max_steps": 1,
                "num_threads": 1,
                "progress_bar": False,
                "test_after_fit": False,
                "devices": processes,
                "strategy": "ddp" if processes > 1 else "auto",
                "precision": 32,
            },
        }
    )
    marks["train_start"] = time.perf_counter()
    train(config)


def _load() -> float:
    return os.getloadavg()[0]


def _run(size: int, folder: Path, processes: int, release_every: str | None = None) -> list[dict]:
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "figures"
        arguments = [
            __file__,
            "--child",
            str(folder / f"synthetic_{size}.lmdb"),
            str(folder / "val.lmdb"),
            str(Path(scratch) / "run"),
            str(result),
        ]
        if processes > 1:
            command = [str(Path(sys.executable).with_name("torchrun")), f"--nproc-per-node={processes}", *arguments]
        else:
            command = [sys.executable, *arguments]
        load = _load()
        done = subprocess.run(
            ["nice", "-n", "5", *command],
            env={
                **os.environ,
                "OMP_NUM_THREADS": "1",
                **({} if release_every is None else {"EQUIMOL_SCALE_RELEASE_EVERY": release_every}),
            },
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if done.returncode != 0:
            raise RuntimeError(f"run of {size} frames failed:\n{done.stderr[-3000:]}")
        return [
            {**json.loads(Path(f"{result}.{rank}").read_text()), "frames": size, "load_before": load}
            for rank in range(processes)
        ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder with synthetic_<N>.lmdb and val.lmdb")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument(
        "--release-every", help="LMDB frames read between unmappings (an int, or 'none': never); default: the library's"
    )
    parser.add_argument("--out", type=Path, help="JSON record to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args()
    if args.out:
        from _common import check_outputs

        check_outputs([args.out], args.overwrite)
    runs = [
        row
        for _ in range(args.repeats)
        for size in args.sizes
        for row in _run(size, args.folder, args.processes, args.release_every)
    ]
    table = []
    for size in args.sizes:
        rows = [row for row in runs if row["frames"] == size]
        table.append(
            {
                "frames": size,
                "lmdb_gib": (args.folder / f"synthetic_{size}.lmdb").stat().st_size / 2**30,
                **{
                    key: statistics.median(row[key] for row in rows)
                    for key in (
                        "first_step_s",
                        "cpu_s",
                        "setup_s",
                        "import_s",
                        "peak_rss_mib",
                        "rssanon_mib",
                        "rssfile_mib",
                        "load_before",
                    )
                },
                "runs": len(rows),
            }
        )
    base = table[0]
    print(f"processes {args.processes}, threads 1, {os.cpu_count()} CPUs; medians of {args.repeats} interleaved runs")
    print(
        "| frames | LMDB GiB | first step s | x 10k | CPU s | x 10k | setup s | peak RSS MiB | x 10k "
        "| anon RSS MiB | x 10k | file RSS MiB | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in table:
        print(
            f"| {row['frames']:,} | {row['lmdb_gib']:.2f} | {row['first_step_s']:.1f} | "
            f"{row['first_step_s'] / base['first_step_s']:.2f} | {row['cpu_s']:.1f} | "
            f"{row['cpu_s'] / base['cpu_s']:.2f} | "
            f"{row['setup_s']:.1f} | {row['peak_rss_mib']:.0f} | "
            f"{row['peak_rss_mib'] / base['peak_rss_mib']:.2f} | {row['rssanon_mib']:.0f} | "
            f"{row['rssanon_mib'] / base['rssanon_mib']:.2f} | {row['rssfile_mib']:.0f} | {row['load_before']:.1f} |"
        )
    if args.out:
        import torch
        from equimol.datasets.lmdb_dataset import RELEASE_EVERY

        from equimol.utils.machine import describe_machine

        torch.set_num_threads(1)
        record = {
            "processes": args.processes,
            "machine": describe_machine("cpu"),
            "lmdb_release_every": RELEASE_EVERY if args.release_every is None else args.release_every,
            "table": table,
            "runs": runs,
        }
        args.out.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    else:
        raise SystemExit(main())
