#!/usr/bin/env bash
# Side-by-side accuracy of equimol's main-job config (configs/3bpa_quick.yaml) and MACE "small" on 3BPA:
# both trained at the same time, one thread each, for the same CPU-time budget, then tested on
# test_300K and test_600K; optionally (--timing) E+F time through both ASE calculators.
#
#   bash benchmarks/accuracy_vs_mace_3bpa.sh [--budget 540] [--seed 0] [--timing] [section.key=value ...]
#
# section.key=value arguments are equimol config overrides (e.g. the architecture to compare). Writes
# benchmarks/accuracy_vs_mace_3bpa.{md,json,png} (--out PREFIX to write elsewhere); runs go to
# runs/accuracy_vs_mace_3bpa/. All options: .venv/bin/python benchmarks/accuracy_vs_mace_3bpa.py --help
#
# MACE needs e3nn 0.4.4 and equimol e3nn 0.6, so MACE gets its own virtual environment, .venv-mace/.
# torch is installed first, pinned to the CPU build 2.13.0: a bare "torch" requirement pulls a CUDA build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
mace_ok() {
  .venv-mace/bin/python -c "import importlib.metadata as m, mace.calculators; assert m.version('mace-torch') == '0.3.16'" \
    >/dev/null 2>&1
}
if ! mace_ok; then
  python="${PYTHON:-python3}"
  [ -x .venv-mace/bin/python ] || "$python" -m venv .venv-mace
  .venv-mace/bin/python -m pip install --quiet --upgrade pip
  .venv-mace/bin/python -m pip install --quiet "torch==2.13.0"
  .venv-mace/bin/python -m pip install --quiet "mace-torch==0.3.16"
  mace_ok || { echo "accuracy_vs_mace_3bpa.sh: error: mace-torch 0.3.16 did not install into .venv-mace" >&2; exit 2; }
fi
exec .venv/bin/python benchmarks/accuracy_vs_mace_3bpa.py "$@"
