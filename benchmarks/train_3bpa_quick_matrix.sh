#!/usr/bin/env bash
# The closing-note matrix: configs/3bpa_quick.yaml (same time budget) for each tensor-product backend
# (cg, gaunt, cp), with SPE off and on: six trainings of ~10 minutes each, one after another.
# Run it on a quiet machine (the budget is wall time, so other jobs change the result):
#
#   bash benchmarks/train_3bpa_quick_matrix.sh [extra section.key=value overrides]
#
# Each run lands in runs/3bpa_quick_matrix/<backend>_spe-<on|off>/; the test_300K metrics of all
# six are collected into benchmarks/train_3bpa_quick_matrix.json and .md, with the machine named.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
out=runs/3bpa_quick_matrix
mkdir -p "$out"
for backend in cg gaunt cp; do
  for spe in false true; do
    name="${backend}_spe-$([ "$spe" = true ] && echo on || echo off)"
    echo "=== $name ==="
    .venv/bin/equimol train configs/3bpa_quick.yaml "model.tp_backend=$backend" "model.spe.enabled=$spe" \
      "trainer.run_dir=$out/$name" trainer.progress_bar=false "$@" 2>&1 | tee "$out/$name.log" | grep -v Warning
  done
done
.venv/bin/python - "$out" <<'PY'
import json, sys
from pathlib import Path

from equimol.utils.machine import describe_machine, machine_label

out = Path(sys.argv[1])
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
    rows.append({"backend": backend, "spe": spe, "epochs": None if last_epoch is None else last_epoch + 1,
                 "energy_rmse_meV": 1e3 * metrics["energy_rmse"], "energy_mae_meV": 1e3 * metrics["energy_mae"],
                 "forces_rmse_meV_per_A": 1e3 * metrics["forces_rmse"],
                 "forces_mae_meV_per_A": 1e3 * metrics["forces_mae"]})
machine = describe_machine("cpu")
record = {"config": "configs/3bpa_quick.yaml", "test_set": "3bpa/test_300K.xyz (1669 frames)",
          "machine": machine, "runs": rows}
Path("benchmarks/train_3bpa_quick_matrix.json").write_text(json.dumps(record, indent=2) + "\n")
lines = [f"# 3BPA quick training, test_300K errors ({machine_label(machine)})", "",
         "| backend | SPE | epochs in budget | E RMSE (meV) | E MAE (meV) | F RMSE (meV/Å) | F MAE (meV/Å) |",
         "| --- | --- | --- | --- | --- | --- | --- |"]
for r in rows:
    lines.append(f"| {r['backend']} | {r['spe']} | {r['epochs']} | {r['energy_rmse_meV']:.1f} | "
                 f"{r['energy_mae_meV']:.1f} | {r['forces_rmse_meV_per_A']:.1f} | {r['forces_mae_meV_per_A']:.1f} |")
Path("benchmarks/train_3bpa_quick_matrix.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
