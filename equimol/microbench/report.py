"""Text tables and log-log plots of benchmark records (shared by the ``equimol bench`` commands)."""

from __future__ import annotations

import json
from pathlib import Path

from equimol.utils.io import atomic_write
from equimol.utils.machine import machine_label


def format_tp_table(record: dict) -> str:
    """Median times, peak memory and the ratio to the first series at each grid point."""
    rows = record["measurements"]
    baseline_label = record["settings"]["backends"][0]["label"]
    baseline = {
        (m["lmax"], m["channels"], m["edges"]): m["forward_backward_s"] for m in rows if m["label"] == baseline_label
    }
    header = (
        f"{'series':<14} {'L':>3} {'C':>5} {'E':>7} {'fwd ms':>10} {'fwd+bwd ms':>11} "
        f"{'mem MiB':>9} {'setup s':>8} {'1st call s':>10} {f'/{baseline_label}':>9}"
    )
    lines = [f"# {machine_label(record['machine'])}, dtype {record['settings']['dtype']}", header, "-" * len(header)]
    for m in rows:
        ratio = m["forward_backward_s"] / baseline[(m["lmax"], m["channels"], m["edges"])]
        lines.append(
            f"{m['label']:<14} {m['lmax']:>3} {m['channels']:>5} {m['edges']:>7} {1e3 * m['forward_s']:>10.3f} "
            f"{1e3 * m['forward_backward_s']:>11.3f} {m['peak_memory_bytes'] / 2**20:>9.2f} {m['setup_s']:>8.2f} "
            f"{m.get('first_call_s', float('nan')):>10.2f} {ratio:>9.3f}"
        )
    for skip in record.get("skipped", []):
        lines.append(f"{skip['label']:<14} {skip['lmax']:>3}  not run: {skip['reason']}")
    if record.get("best"):
        lines.append("")
        lines.append(f"best variant per backend (least fwd+bwd), ratios to {baseline_label}:")
        for b in record["best"]:
            lines.append(
                f"  L={b['lmax']:<3} C={b['channels']:<4} E={b['edges']:<7} {b['backend']:<8} {b['label']:<14} "
                f"forward {b['forward_ratio']:.3f}   forward+backward {b['forward_backward_ratio']:.3f}   "
                f"(CPU time: {b.get('forward_cpu_ratio', float('nan')):.3f}, "
                f"{b.get('forward_backward_cpu_ratio', float('nan')):.3f})"
            )
    if "load_average_1min" in record:
        load = record["load_average_1min"]
        lines.append(f"load average (1 min): {load['before']:.2f} before, {load['after']:.2f} after")
    if record["exponents"]:
        lines.append("")
        lines.append("scaling exponent in L (least-squares slope of log time vs log L):")
        for fit in record["exponents"]:
            lines.append(
                f"  {fit['label']:<14} C={fit['channels']:<4} E={fit['edges']:<7} "
                f"forward {fit['forward_exponent']:.2f}   forward+backward {fit['forward_backward_exponent']:.2f}"
            )
    return "\n".join(lines)


def write_json(record: dict, path: str | Path) -> None:
    """Write ``record`` as indented JSON, creating parent folders."""
    with atomic_write(path, "w") as handle:
        handle.write(json.dumps(record, indent=2) + "\n")


def save_figure(figure, path: str | Path) -> None:
    """Write a matplotlib ``figure`` as a PNG (120 dpi, tight layout, parent folders created), then close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_tp(record: dict, path: str | Path) -> None:
    """Log-log PNG of time against L: solid forward+backward, dashed forward, one colour per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axis = plt.subplots(figsize=(7, 5))
    groups: dict[tuple[str, int, int], list[dict]] = {}
    for m in record["measurements"]:
        groups.setdefault((m["label"], m["channels"], m["edges"]), []).append(m)
    for index, ((label, channels, edges), group) in enumerate(groups.items()):
        group.sort(key=lambda m: m["lmax"])
        lmax = [m["lmax"] for m in group]
        colour = f"C{index % 10}"
        suffix = f" C={channels} E={edges}" if len(groups) > len({k[0] for k in groups}) else ""
        axis.plot(lmax, [1e3 * m["forward_backward_s"] for m in group], "o-", color=colour, label=f"{label}{suffix}")
        axis.plot(lmax, [1e3 * m["forward_s"] for m in group], "s--", color=colour, alpha=0.6)
    axis.set_xscale("log")
    axis.set_yscale("log")
    degrees = sorted({m["lmax"] for m in record["measurements"]})
    axis.set_xticks(degrees, [str(d) for d in degrees])
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.set_xlabel("maximum degree L")
    axis.set_ylabel("median time [ms] (solid: forward+backward, dashed: forward)")
    axis.set_title(f"equimol bench tp ({record['settings']['dtype']})\n{machine_label(record['machine'])}", fontsize=8)
    axis.legend(fontsize=8)
    axis.grid(True, which="both", alpha=0.3)
    save_figure(figure, path)
