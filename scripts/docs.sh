#!/usr/bin/env bash
# Serve the documentation site at http://127.0.0.1:8000 while you edit (mkdocs serve, reloads on change),
# or build it strictly into site/ with --build (a broken link, a missing page or an unresolved docstring
# reference fails). Extra arguments go to mkdocs: bash scripts/docs.sh --dev-addr 0.0.0.0:8000
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
if [ "${1:-}" = "--build" ]; then
  shift
  exec .venv/bin/python -m mkdocs build --strict "$@"
fi
exec .venv/bin/python -m mkdocs serve "$@"
