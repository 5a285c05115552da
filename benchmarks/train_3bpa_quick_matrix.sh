#!/usr/bin/env bash
# The closing-note matrix: configs/3bpa_quick.yaml (same time budget) for each tensor-product backend
# (cg, gaunt, cp), with SPE off and on: six trainings of ~10 minutes each, one after another.
# Run it on a quiet machine (the budget is wall time, so other jobs change the result):
#
#   bash benchmarks/train_3bpa_quick_matrix.sh [extra section.key=value overrides]
#
# Each run lands in runs/3bpa_quick_matrix/<backend>_spe-<on|off>/; the test_300K metrics of all
# six are collected into runs/3bpa_quick_matrix/train_3bpa_quick_matrix.json and .md, with the machine
# named (copy them over benchmarks/train_3bpa_quick_matrix.* to update the committed table).
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
.venv/bin/python benchmarks/train_3bpa_quick_matrix_table.py "$out"
