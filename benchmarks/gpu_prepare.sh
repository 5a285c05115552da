#!/usr/bin/env bash
# Prepare, on any x86-64 machine with pip and internet (NOT on the GPU machine, which has neither), what
# benchmarks/gpu_kernels.py needs on the GPU machine, into two git-ignored folders that the run carries:
#
#   .whl/  wheels for Python 3.12 (the GPU image's): cuEquivariance + its CUDA 13 ops (repacked as one
#          tar.xz: the two ops wheels are 73 MB zipped, 30 MB as xz, and a run carries at most 64 MiB),
#          OpenEquivariance (sdist, built there with the image's nvcc/cmake/nanobind), ase, vesin, lmdb,
#          e3nn; .whl/mace/: mace-torch with e3nn 0.4.4 and its pure-Python needs (its own PYTHONPATH);
#   .gpu/  data/3bpa (train_300K.xyz, test_300K.xyz), cp_cache (prefitted cp factors, L = 1..4, 6),
#          model.pt (a trained model for the NVE check, if MODEL is given).
#
#   bash benchmarks/gpu_prepare.sh [MODEL]      # e.g. runs/3bpa_quick/model.pt
#
# The GPU image (see GPU_RUN.md) has CUDA 13 and torch 2.11: hence the -cu13 ops wheels. On a CUDA 12
# machine use cuequivariance-ops-torch-cu12 / cuequivariance-ops-cu12 instead.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"  # any Python with pip (the environment of scripts/setup.sh will do)
pip=("$python" -m pip)
exclude="$(git rev-parse --git-path info/exclude)"
for folder in /.whl/ /.gpu/; do grep -qx "$folder" "$exclude" 2>/dev/null || echo "$folder" >> "$exclude"; done
mkdir -p .whl/mace .gpu/data/3bpa .gpu/cp_cache
platform=(--python-version 3.12 --implementation cp --only-binary=:all: --no-deps
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

"${pip[@]}" download -q "${platform[@]}" -d .whl cuequivariance==0.13.0 cuequivariance-torch==0.13.0 \
  ase==3.29.0 vesin==0.6.2 lmdb==3.0.0 e3nn==0.6.0 setuptools-scm
"${pip[@]}" download -q --no-deps --no-binary=:all: -d .whl openequivariance==0.7.0
"${pip[@]}" download -q "${platform[@]}" -d .whl/mace mace-torch==0.3.16 e3nn==0.4.4 torch-ema==0.3 prettytable \
  wcwidth matscipy configargparse GitPython gitdb smmap orjson
"${pip[@]}" download -q --no-deps --no-binary=:all: -d .whl/mace python-hostlist  # no wheel on PyPI

ops=.whl/cuequivariance_ops_cu13_torch_cu13-0.13.0.tar.xz
if [ ! -f "$ops" ]; then
  work="$(mktemp -d)"
  "${pip[@]}" download -q "${platform[@]}" -d "$work" cuequivariance-ops-cu13==0.13.0 cuequivariance-ops-torch-cu13==0.13.0
  # a/ and b/ are the two wheels unpacked: copying both into a folder on PYTHONPATH installs them.
  unzip -q "$work"/cuequivariance_ops_cu13-*.whl -d "$work/a"
  unzip -q "$work"/cuequivariance_ops_torch_cu13-*.whl -d "$work/b"
  tar cf - -C "$work" a b | xz -T0 -6 > "$ops"
  rm -rf "$work"
fi

cp -f ../shared/data/3bpa/train_300K.xyz ../shared/data/3bpa/test_300K.xyz .gpu/data/3bpa/
EQUIMOL_CACHE_DIR="$root/.gpu/cp_cache" "$python" benchmarks/gpu_kernels.py --prefit
if [ $# -ge 1 ]; then cp -f "$1" .gpu/model.pt; fi
du -sh .whl .gpu
echo "total carried (tree + .whl + .gpu) must stay under 64 MiB"
