#!/usr/bin/env bash
# Set up both virtual environments, then run benchmarks/accuracy_vs_mace_3bpa.py with these arguments
# (--setup-only: stop after the setup, e.g. before learning_curve_3bpa.py):
#
#   bash benchmarks/accuracy_vs_mace_3bpa.sh [--budget 540] [--seed 0] [--timing] [section.key=value ...]
#
# MACE needs e3nn 0.4.4 and equimol e3nn 0.6, so MACE gets its own virtual environment, .venv-mace/.
# torch is installed first, pinned to the CPU build 2.13.0: a bare "torch" requirement pulls a CUDA build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
mace_ok() {
  .venv-mace/bin/python -c "import importlib.metadata as m, mace.calculators; assert m.version('mace-torch') == '0.3.16'" \
    >/dev/null 2>&1
}
if ! mace_ok; then
  [ -x .venv-mace/bin/python ] || "${PYTHON:-python3}" -m venv .venv-mace
  .venv-mace/bin/python -m pip install --quiet --upgrade pip
  .venv-mace/bin/python -m pip install --quiet "torch==2.13.0"
  .venv-mace/bin/python -m pip install --quiet "mace-torch==0.3.16"
  mace_ok || { echo "accuracy_vs_mace_3bpa.sh: error: mace-torch 0.3.16 did not install into .venv-mace" >&2; exit 2; }
fi
[ "${1:-}" = --setup-only ] && exit 0
exec .venv/bin/python benchmarks/accuracy_vs_mace_3bpa.py "$@"
