"""MkDocs hook: the Benchmarks pages are rendered from the committed results in ``benchmarks/`` at build time.

Nothing is copied by hand. Three things happen on every build (and on every ``mkdocs serve`` reload):

* a ``<!-- benchmark: NAME FILE -->`` line in a page is replaced by a table rendered from
  ``benchmarks/FILE`` (``tp`` for an ``equimol bench tp`` JSON, ``model`` for ``equimol bench model``,
  ``vs_mace`` for ``accuracy_vs_mace_3bpa.json``), headed by the machine the JSON names;
* every committed report ``benchmarks/*.md`` becomes a page ``benchmarks/reports/<name>.md`` (its
  headings one level down under a title naming the file), and ``benchmarks/results.md`` lists them with
  every committed JSON and the machine it names;
* every committed plot ``benchmarks/*.png`` is served as ``benchmarks/img/<name>.png``.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
MARKER = re.compile(r"^<!-- benchmark: (\w+) ([\w.]+) -->$", re.M)


def machine_text(machine) -> str:
    """One line naming the machine of a result: CPU, cores, torch threads, torch version."""
    if isinstance(machine, str):
        return machine
    if not isinstance(machine, dict):
        return "not recorded"
    parts = [f"{machine.get('cpu', '?')} ({machine.get('cpu_count', '?')} cores)"]
    if "torch_threads" in machine:
        parts.append(f"{machine['torch_threads']} torch thread(s)")
    if "torch" in machine:
        parts.append(f"torch {machine['torch']}")
    return ", ".join(parts)


def result_machine(data: dict) -> str:
    for key in ("machine", "machine_info"):
        if key in data:
            return machine_text(data[key])
    software = data.get("software")
    if isinstance(software, dict) and "machine" in software:
        return machine_text(software["machine"])
    return "not recorded"


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def render_tp(data: dict, name: str) -> str:
    """``equimol bench tp`` JSON: forward+backward ms of the first backend and every variant's ratio to it, per L."""
    rows = defaultdict(dict)
    first_calls = defaultdict(dict)
    for m in data["measurements"]:
        rows[m["label"]][m["lmax"]] = m["forward_backward_s"]
        first_calls[m["label"]][m["lmax"]] = m.get("first_call_s")
    lmaxes = sorted({m["lmax"] for m in data["measurements"]})
    labels = [b["label"] for b in data["settings"]["backends"]]
    base = labels[0]
    head = "| L | " + " | ".join(str(lmax) for lmax in lmaxes) + " |\n| --- |" + " --- |" * len(lmaxes) + "\n"
    lines = [f"| `{base}` forward+backward (ms) | " + " | ".join(_fmt(rows[base][lm] * 1e3) for lm in lmaxes) + " |"]
    for label in labels[1:]:
        cells = [_fmt(rows[label][lm] / rows[base][lm]) if lm in rows[label] else "not run" for lm in lmaxes]
        lines.append(f"| `{label}` / `{base}` | " + " | ".join(cells) + " |")
        if any(label in s["label"] for s in data.get("skipped", [])) or "compiled" in label:
            calls = [_fmt(first_calls[label][lm]) if first_calls[label].get(lm) else "not run" for lm in lmaxes]
            lines.append(f"| `{label}` first call (s) | " + " | ".join(calls) + " |")
    best = {}
    for entry in data.get("best", []):
        if entry["backend"] != data["settings"]["backends"][0]["backend"]:
            best.setdefault(entry["backend"], {})[entry["lmax"]] = entry["label"]
    for backend, by_lmax in best.items():
        lines.append(f"| best `{backend}` variant | " + " | ".join(f"`{by_lmax.get(lm, '-')}`" for lm in lmaxes) + " |")
    settings = data["settings"]
    load = data.get("load_average_1min")
    load_text = f"; load average {load['before']:.2f} before and {load['after']:.2f} after" if load else ""
    caption = (
        f"`benchmarks/{name}`: {machine_text(data['machine'])}; {settings['dtype']}, {settings['channels']} channels, "
        f"{settings['edges']} edges, median of {settings['repeats']} repeats{load_text}."
    )
    skipped = "".join(
        f"\n\nNot run: `{s['label']}` at L = {s['lmax']}: {s['reason']}." for s in data.get("skipped", [])
    )
    exponents = ", ".join(f"`{e['label']}` {e['forward_backward_exponent']:.1f}" for e in data.get("exponents", []))
    fitted = f"\n\nFitted exponent of forward+backward time in L: {exponents}." if exponents else ""
    return caption + "\n\n" + head + "\n".join(lines) + skipped + fitted


def render_model(data: dict, name: str) -> str:
    """``equimol bench model`` JSON: energy+forces ms per structure, per system and size, ratios to the first."""
    by_key = defaultdict(dict)
    labels = []
    for m in data["measurements"]:
        by_key[(m["system"], m["atoms"])][m["label"]] = m["energy_forces_s"]
        if m["label"] not in labels:
            labels.append(m["label"])
    base = labels[0]
    head = (
        f"| system | atoms | `{base}` (ms) | "
        + " | ".join(f"`{label}` / `{base}`" for label in labels[1:])
        + " |\n| --- | --- | --- |"
        + " --- |" * (len(labels) - 1)
    )
    lines = []
    for (system, atoms), times in sorted(by_key.items()):
        cells = [_fmt(times[label] / times[base]) if label in times and base in times else "-" for label in labels[1:]]
        base_ms = _fmt(times[base] * 1e3) if base in times else "-"
        lines.append(f"| {system} | {atoms} | {base_ms} | " + " | ".join(cells) + " |")
    settings = data["settings"]
    caption = (
        f"`benchmarks/{name}`: {machine_text(data['machine'])}; {settings['dtype']}, {settings['channels']} channels, "
        f"L = {settings['lmax']}, cutoff {settings['radial_cutoff']} Å; {settings['timed']}, median of "
        f"{settings['repeats']} repeats."
    )
    return caption + "\n\n" + head + "\n" + "\n".join(lines)


def render_vs_mace(data: dict, name: str) -> str:
    """``accuracy_vs_mace_3bpa.json``: test force and energy RMSE of equimol and MACE after the same CPU budget."""
    lines = [
        "| test set | frames | equimol F (meV/Å) | MACE F (meV/Å) | equimol E (meV/atom) | MACE E (meV/atom) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for test_set, ours in data["test"]["equimol"].items():
        theirs = data["test"]["mace"][test_set]
        lines.append(
            f"| {test_set} | {ours['frames']} | {ours['forces_rmse']:.1f} | {theirs['forces_rmse']:.1f} | "
            f"{ours['energy_rmse_per_atom']:.2f} | {theirs['energy_rmse_per_atom']:.1f} |"
        )
    load = data["training"]["load_1min"]
    caption = (
        f"`benchmarks/{name}`: {machine_text(data['software']['machine'])}; {data['budget_cpu_s']:.0f} CPU-s of "
        f"training each, seed {data['seed']}, load average {load['min']:.1f} to {load['max']:.1f}; "
        f"mace-torch {data['software']['mace_env']['mace-torch']}."
    )
    return caption + "\n\n" + "\n".join(lines)


def render_learning_curve(data: dict, name: str) -> str:
    """``learning_curve_3bpa.json``: mean over seeds of E and F RMSE of each run code at each snapshot."""
    summary = data["mean_over_seeds"]
    codes = sorted({key.split("|")[0] for key in summary}, key=lambda c: (c != "main", c != "mace", c))
    times = sorted({float(key.split("|")[1]) for key in summary})
    tests = ("test_300K", "test_600K")
    head = "| run | CPU s | " + " | ".join(f"{t} E (meV/atom) / F (meV/Å)" for t in tests) + " | seeds |"
    lines = [head, "|" + " --- |" * (3 + len(tests))]
    for code in codes:
        for cpu_s in times:
            cells, seeds = [], 0
            for test in tests:
                energy = summary.get(f"{code}|{cpu_s}|{test}|energy_rmse_per_atom")
                forces = summary.get(f"{code}|{cpu_s}|{test}|forces_rmse")
                if energy is None or forces is None:
                    cells.append("–")
                    continue
                seeds = energy["seeds"]
                cells.append(f"{energy['mean']:.2f} / {forces['mean']:.1f}")
            if seeds:
                lines.append(f"| {code} | {cpu_s:g} | " + " | ".join(cells) + f" | {seeds} |")
    loads = [x for run in data["runs"] for x in run["load_1min_start_end"]]
    caption = (
        f"`benchmarks/{name}`: {result_machine(data)}; one torch thread per run; 1-minute load "
        f"{min(loads):.1f} to {max(loads):.1f} at the starts and ends of the runs; mean over seeds."
    )
    return caption + "\n\n" + "\n".join(lines)


RENDERERS = {
    "tp": render_tp,
    "model": render_model,
    "vs_mace": render_vs_mace,
    "learning_curve": render_learning_curve,
}


def render_marker(match: re.Match) -> str:
    kind, name = match.group(1), match.group(2)
    if kind not in RENDERERS:
        raise ValueError(f"unknown benchmark renderer {kind!r} (known: {sorted(RENDERERS)})")
    return RENDERERS[kind](json.loads((BENCHMARKS / name).read_text(encoding="utf-8")), name)


def report_page(path: Path) -> str:
    """A committed report as a page: its own headings one level down, under a title naming the file."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    title = lines[0].lstrip("# ").strip() if lines and lines[0].startswith("# ") else path.stem
    body = "\n".join(lines[1:] if lines and lines[0].startswith("# ") else lines)
    body = re.sub(r"^(#{2,5}) ", r"#\1 ", body, flags=re.M)
    return f"# {title}\n\n*Committed report `benchmarks/{path.name}`, rendered as it is.*\n\n{body}\n"


def results_page() -> str:
    lines = [
        "# All committed results",
        "",
        "Every result file in `benchmarks/`, read at build time. Reports:",
        "",
    ]
    for path in sorted(BENCHMARKS.glob("*.md")):
        lines.append(f"- [`{path.name}`](reports/{path.stem}.md): {report_page(path).splitlines()[0][2:]}")
    lines += ["", "Plots:", ""]
    for path in sorted(BENCHMARKS.glob("*.png")):
        lines.append(f"- `{path.name}`: ![{path.stem}](img/{path.name}){{ width=480 }}")
    lines += ["", "Measurements (JSON), with the machine each names:", "", "| file | machine |", "| --- | --- |"]
    for path in sorted(BENCHMARKS.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        lines.append(f"| `{path.name}` | {result_machine(data) if isinstance(data, dict) else 'not recorded'} |")
    return "\n".join(lines) + "\n"


def on_files(files, config):
    for path in sorted(BENCHMARKS.glob("*.png")):
        files.append(File.generated(config, f"benchmarks/img/{path.name}", abs_src_path=str(path)))
    for path in sorted(BENCHMARKS.glob("*.md")):
        files.append(File.generated(config, f"benchmarks/reports/{path.stem}.md", content=report_page(path)))
    files.append(File.generated(config, "benchmarks/results.md", content=results_page()))
    return files


def on_page_markdown(markdown, page, config, files):
    return MARKER.sub(render_marker, markdown)
