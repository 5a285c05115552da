"""How fast the ``equimol`` command answers help and input errors (wall seconds, fresh processes).

Measured: ``equimol --help``, ``equimol train --help``, ``equimol train missing.yaml`` (an input error) and,
for scale, ``python -c "import equimol.tp"``: the torch and e3nn import that every command paid at
start-up while ``equimol.cli.bench`` imported ``equimol.tp`` and ``equimol.cli.predict`` imported torch.
Each is run ``--repeats`` times; the median is reported with the machine and its load average.

    python benchmarks/cli_startup.py --out benchmarks/cli_startup_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EQUIMOL = str(Path(sys.executable).with_name("equimol"))  # the console script of this interpreter's environment
COMMANDS = {
    "equimol --help": [EQUIMOL, "--help"],
    "equimol train --help": [EQUIMOL, "train", "--help"],
    "equimol train missing.yaml": [EQUIMOL, "train", "missing.yaml"],
    "import equimol.tp (torch, e3nn)": [sys.executable, "-c", "import equimol.tp"],
}


def wall_seconds(command: list[str], folder: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=folder, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.out.exists() and not args.overwrite:
        sys.exit(f"{args.out} exists; pass --overwrite to replace it")
    from equimol.utils.machine import cpu_model

    record = {"machine": f"{cpu_model()}, {os.cpu_count()} cores", "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as folder:
        record["median_wall_s"] = {
            name: statistics.median(wall_seconds(command, folder) for _ in range(args.repeats))
            for name, command in COMMANDS.items()
        }
    record["load_average_end"] = os.getloadavg()
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
