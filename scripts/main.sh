#!/usr/bin/env bash
# Set up .venv/ and run the main job on the shipped default.
# Until training lands (issue 7) the main job is the tensor-product benchmark.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
mkdir -p runs
.venv/bin/equimol bench tp --lmax 1,2,3,4 --channels 16 --edges 1000 \
  --json runs/bench_tp.json --plot runs/bench_tp.png
