"""How fast the ``equimol`` command answers help and input errors (wall seconds, fresh processes).

Measured: ``equimol --help``, ``equimol train --help``, ``equimol train missing.yaml`` (an input error) and,
for scale, ``python -c "import equimol.tp"``: the torch and e3nn import that every command paid at
start-up while ``equimol.cli.bench`` imported ``equimol.tp`` and ``equimol.cli.predict`` imported torch.
Each is run ``--repeats`` times; the median is reported with the machine and its load average.

    python benchmarks/cli_startup.py --out benchmarks/cli_startup_cpu.json
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import timeit
from functools import partial

from _common import equimol_command, finish_record, parse_json_out, start_record


def commands() -> dict[str, list[str]]:
    equimol = equimol_command()
    return {
        "equimol --help": [equimol, "--help"],
        "equimol train --help": [equimol, "train", "--help"],
        "equimol train missing.yaml": [equimol, "train", "missing.yaml"],
        "import equimol.tp (torch, e3nn)": [sys.executable, "-c", "import equimol.tp"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parse_json_out(parser)
    record = start_record()
    with tempfile.TemporaryDirectory() as folder:
        runs = {name: partial(subprocess.run, command, cwd=folder, capture_output=True)
                for name, command in commands().items()}  # fmt: skip
        repeats = {name: timeit.repeat(run, number=1, repeat=args.repeats) for name, run in runs.items()}
        record["median_wall_s"] = {name: statistics.median(seconds) for name, seconds in repeats.items()}
    finish_record(record, args.out)


if __name__ == "__main__":
    main()
