"""Pieces every benchmark shares: the Markdown table, the ``stem.json`` + ``stem.md`` pair, result files that
are never overwritten unless asked, a record rewritten after each section, series timed in interleaved
rounds, and the ``equimol`` command of the running environment.

Benchmarks run as scripts (``python benchmarks/<name>.py``), so their own folder is on ``sys.path`` and
they import this module as ``_common``. Helpers that tests share live in the package
(:mod:`equimol.microbench.systems`, :mod:`equimol.utils.symmetry`), never in ``tests/``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"  # the workplace's data, beside the clone (tests use the same)


def parse_json_out(parser: argparse.ArgumentParser, argv=None, flag="--out", default=None, markdown=False):
    """Add ``flag`` (the result JSON; required without a ``default``) and ``--overwrite`` to ``parser``, parse ``argv``
    (default: the command line) and stop before any work if the JSON (and, with ``markdown``, the ``.md`` beside it)
    exists without ``--overwrite``."""
    parser.add_argument(flag, type=Path, default=default, required=default is None, help="result JSON to write")
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing {flag}")
    args = parser.parse_args(argv)
    path = getattr(args, flag.lstrip("-"))
    check_outputs([path, path.with_suffix(".md")] if markdown else [path], args.overwrite)
    return args


def start_record() -> dict:
    """A result record naming the machine (CPU model, cores) and the 1/5/15-minute load average at start."""
    from equimol.utils.machine import cpu_model

    return {"machine": f"{cpu_model()}, {os.cpu_count()} cores", "load_average_start": os.getloadavg()}


def finish_record(record: dict, path: str | Path) -> None:
    """Add the load average at the end, write ``record`` to ``path`` (JSON) and print it."""
    record["load_average_end"] = os.getloadavg()
    Path(path).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=1))


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """Lines of a Markdown table: the header, the ``---`` rule, one line per row (cells as given)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def interleaved(series: dict[str, Callable[[], object]], rounds: int, warmup: int = 0) -> dict[str, list]:
    """Call every ``series[name]()`` once a round, in turn, for ``warmup + rounds`` rounds, so that a shared
    machine's load falls on all series alike; per name, what its calls returned in the last ``rounds`` rounds."""
    kept: dict[str, list] = {name: [] for name in series}
    for index in range(warmup + rounds):
        for name, function in series.items():
            value = function()
            if index >= warmup:
                kept[name].append(value)
    return kept


def quick_3bpa_model(**changes) -> dict:
    """The ``model:`` section of ``configs/3bpa_quick.yaml`` (the main job's model) with fixed statistics, not
    ``auto``: ``avg_num_neighbors`` 12, no ``e0s``, ``energy_shift`` 0 eV, ``energy_scale`` 1 eV; then ``changes``."""
    import yaml

    section = yaml.safe_load((ROOT / "configs" / "3bpa_quick.yaml").read_text())["model"]
    return section | {"avg_num_neighbors": 12.0, "e0s": None, "energy_shift": 0.0, "energy_scale": 1.0} | changes


def strided_loader(path: str | Path, model, stride: int, batch_size: int = 20):
    """Every ``stride``-th frame of ``path`` with its energy and forces, as ``model``'s graphs (its cutoff and
    dtype), in file order, in batches of ``batch_size``: the test sets of the 3BPA drivers."""
    from equimol.datasets.atoms_dataset import AtomsDataset, LabelSettings
    from equimol.datasets.readers import LabelKeys
    from torch.utils.data import Subset
    from torch_geometric.loader import DataLoader

    settings = LabelSettings(radial_cutoff=model.radial_cutoff, dtype=model.dtype)
    dataset = AtomsDataset([path], settings, LabelKeys("energy", "forces", None))
    return DataLoader(Subset(dataset, range(0, len(dataset), stride)), batch_size=batch_size, shuffle=False)


def check_outputs(paths: Iterable[str | Path], overwrite: bool) -> None:
    """Stop (exit status 2, one line) before any work if a result file exists and ``overwrite`` is not given:
    committed results are replaced only on purpose."""
    existing = [str(path) for path in paths if Path(path).exists()]
    if existing and not overwrite:
        verb = "exists" if len(existing) == 1 else "exist"
        fail(f"{', '.join(existing)} {verb}; give --overwrite to replace {'it' if len(existing) == 1 else 'them'}")


def fail(message: str) -> None:
    """Stop with ``<script>: error: message`` on stderr and exit status 2 (an input error, not a bug)."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_stem(parser: argparse.ArgumentParser, name: str, argv: Sequence[str] | None = None):
    """Add ``--out STEM`` (default ``benchmarks/<name>``) and ``--overwrite`` to ``parser``, parse ``argv`` (default:
    the command line), and stop before any work if ``STEM.json`` or ``STEM.md`` exists without ``--overwrite``."""
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / name), help="output stem (STEM.json and STEM.md)")
    parser.add_argument("--overwrite", action="store_true", help="replace the stem's .json and .md")
    args = parser.parse_args(argv)
    check_outputs([f"{args.out}.json", f"{args.out}.md"], args.overwrite)
    return args


def write_markdown(stem: str | Path, lines: Sequence[str]) -> None:
    """Write ``stem.md`` from ``lines`` (one trailing newline) and say so with the JSON beside it."""
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {stem}.json and {stem}.md")


def write_json(stem: str | Path, record: dict) -> None:
    """Write ``record`` to ``stem.json`` (indented one space, trailing newline)."""
    Path(f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def equimol_command() -> str:
    """The ``equimol`` executable of the running interpreter's environment, else the one on ``PATH``."""
    beside = Path(sys.executable).with_name("equimol")
    if beside.is_file():
        return str(beside)
    found = shutil.which("equimol")
    if found is None:
        fail(f"no equimol command beside {sys.executable} or on PATH; install equimol into this environment")
    return found


def device_tag(machine: dict) -> str:
    """A machine record's GPU (else device) name as a file-name part: ``NVIDIA H200`` -> ``NVIDIA_H200``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", str(machine.get("gpu") or machine["device"])).strip("_")


class SectionRecord:
    """A result record rewritten to ``path`` (JSON) after each section, so that a run cut short keeps what it
    measured; a section that raises is recorded with its error (and traceback) and the run goes on."""

    def __init__(self, record: dict, path: str | Path) -> None:
        self.record, self.path = record, Path(path)
        record.setdefault("sections", {})

    def section(self, name: str, function, *args):
        """Record ``{"result": function(*args), "seconds"}`` (or the error) as ``sections[name]``; the result."""
        start = time.perf_counter()
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
        try:
            entry = {"result": function(*args)}
        except Exception as error:  # noqa: BLE001 - one broken section must not lose the others
            entry = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-2000:]}
        self.record["sections"][name] = entry | {"seconds": time.perf_counter() - start}
        self.write()
        return entry.get("result")

    def write(self) -> None:
        self.path.write_text(json.dumps(self.record, indent=1, default=str) + "\n", encoding="utf-8")
