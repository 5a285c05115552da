"""Collect the test_300K metrics of the quick-training matrix (benchmarks/train_3bpa_quick_matrix.sh).

    python benchmarks/train_3bpa_quick_matrix_table.py RUNS [--out benchmarks/train_3bpa_quick_matrix --overwrite]

RUNS holds one run folder per training, named <backend>_spe-<on|off>; writes OUT.json and OUT.md
(default OUT: RUNS/train_3bpa_quick_matrix; the committed pair is replaced only with --overwrite).
"""

import argparse
import json
from pathlib import Path

from _common import check_stem

from equimol.utils.machine import describe_machine, machine_label

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("runs", type=Path, help="folder of the six run folders")
parser.add_argument("--out", type=Path, help="output stem (default: RUNS/train_3bpa_quick_matrix)")
parser.add_argument("--overwrite", action="store_true", help="replace the stem's .json and .md")
args = parser.parse_args()
out = args.runs
prefix = args.out or out / "train_3bpa_quick_matrix"
check_stem(prefix, args.overwrite)
rows = []
for run in sorted(out.iterdir()):
    metrics_file = run / "test_metrics.json"
    if not metrics_file.is_file():
        continue
    backend, spe = run.name.split("_spe-")
    metrics = json.loads(metrics_file.read_text())["metrics"]
    epochs = sorted((run / "csv").glob("version_*/metrics.csv"))
    last_epoch = None
    if epochs:
        lines = [line.split(",")[0] for line in epochs[-1].read_text().splitlines()[1:]]
        last_epoch = max((int(e) for e in lines if e), default=None)
    rows.append(
        {
            "backend": backend,
            "spe": spe,
            "epochs": None if last_epoch is None else last_epoch + 1,
            "energy_rmse_meV": 1e3 * metrics["energy_rmse"],
            "energy_mae_meV": 1e3 * metrics["energy_mae"],
            "forces_rmse_meV_per_A": 1e3 * metrics["forces_rmse"],
            "forces_mae_meV_per_A": 1e3 * metrics["forces_mae"],
        }
    )
machine = describe_machine("cpu")
record = {
    "config": "configs/3bpa_quick.yaml",
    "test_set": "3bpa/test_300K.xyz (1669 frames)",
    "machine": machine,
    "runs": rows,
}
prefix.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
lines = [
    f"# 3BPA quick training, test_300K errors ({machine_label(machine)})",
    "",
    "| backend | SPE | epochs in budget | E RMSE (meV) | E MAE (meV) | F RMSE (meV/Å) | F MAE (meV/Å) |",
    "| --- | --- | --- | --- | --- | --- | --- |",
]
for r in rows:
    lines.append(
        f"| {r['backend']} | {r['spe']} | {r['epochs']} | {r['energy_rmse_meV']:.1f} | "
        f"{r['energy_mae_meV']:.1f} | {r['forces_rmse_meV_per_A']:.1f} | {r['forces_mae_meV_per_A']:.1f} |"
    )
prefix.with_suffix(".md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
