#!/usr/bin/env bash
# Create .venv/ at the repository root and install equimol with its test extras.
# torch is pinned to the CPU build 2.13.0 first: a bare "torch" requirement would make pip
# pull a multi-GB CUDA build. pyproject.toml itself declares torch>=2.4 for real users.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
# A venv whose creation was interrupted (no pip inside) is made again rather than used half-built.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv
  "$python" -m venv .venv
fi
stamp=.venv/.equimol-installed
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".[test]"
  echo "$wanted" > "$stamp"
fi
# The docs' browser test drives Debian's headless Chromium through its chromedriver: installed here only when
# missing, and only where apt-get can run (as root); elsewhere install the two packages yourself.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    if ! { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
      echo "apt-get could not install chromium and chromium-driver: the docs' browser test will fail" >&2
    fi
  else
    echo "chromium and chromium-driver are missing and apt-get cannot run here: the docs' browser test will fail" >&2
  fi
fi
# pair_style equimol (the LAMMPS plugin) is compiled once per torch/LAMMPS version and plugin source into
# equimol's cache (about 30 s), so the tests find it; without cmake or a C++ compiler this says so and the
# rest still works (fix external needs no compiler)
if ! plugin_log="$(.venv/bin/equimol lammps build-plugin 2>&1)"; then
  echo "$plugin_log" | tail -n 1 >&2
  echo "pair_style equimol was not built; equimol lammps (fix external) still works" >&2
fi
