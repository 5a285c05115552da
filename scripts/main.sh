#!/usr/bin/env bash
# Set up .venv/ and run the main job on the shipped default: train configs/3bpa_quick.yaml (9 minutes
# of training on a CPU), then evaluate the model on 3BPA test_300K. Results in runs/3bpa_quick/:
# model.pt, test_metrics.json, test_parity.png, checkpoints/, csv/ and tensorboard/ logs.
# Extra arguments are section.key=value overrides, e.g. model.tp_backend=gaunt.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
.venv/bin/equimol train configs/3bpa_quick.yaml "$@"
