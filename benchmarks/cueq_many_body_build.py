"""How long the main job's model takes to build with ``model.many_body: cueq`` (``equimol/manybody/cueq.py``).

Each measurement runs in a fresh Python process (no in-process cache), one torch thread:

* ``cold``: ``build_model`` of ``configs/3bpa_quick.yaml``'s model with ``many_body: cueq``, empty cache folder
  (the contraction's paths are derived by cuEquivariance and written to the cache);
* ``warm``: the same build again, the paths read from the cache;
* ``load``: ``load_model`` of that model's file (warm cache);
* ``gaunt``: the shipped main job (``many_body: gaunt``), for scale;
* ``former`` (``--former``): the two blocks the former implementation built, cuEquivariance's own
  ``SymmetricContraction`` (its PyTorch method: one einsum per path, ordered by opt_einsum_fx), same
  irreps, correlation and elements; minutes.

    python benchmarks/cueq_many_body_build.py --out benchmarks/cueq_many_body_build_cpu.json [--former]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import finish_record, parse_json_out, quick_3bpa_model, start_record

STEPS = {
    "build": """
model = {model!r}
from equimol.models import build_model
start = time.perf_counter()
built = build_model(model)
seconds = time.perf_counter() - start
if {export!r}:
    from equimol.export import export_model
    export_model(built, {export!r})
""",
    "load": """
from equimol.export import load_model
start = time.perf_counter()
load_model({export!r})
seconds = time.perf_counter() - start
""",
    "former": """
import cuequivariance as cue
import cuequivariance_torch as cuet
irreps = cue.Irreps(cue.O3, "32x0e + 32x1o + 32x2e + 32x3o")
start = time.perf_counter()
for _ in range(2):  # one block per layer
    cuet.SymmetricContraction(irreps, irreps, contraction_degree=3, num_elements=4, layout=cue.mul_ir,
                              dtype=torch.float64, method="naive")
seconds = time.perf_counter() - start
""",
}


def measure(step: str, cache: Path, **values) -> float:
    """Seconds that ``step`` takes in a fresh process with ``EQUIMOL_CACHE_DIR=cache``."""
    code = "import time, torch\ntorch.set_num_threads(1)\n" + STEPS[step].format(**values) + "\nprint(seconds)\n"
    env = dict(os.environ, EQUIMOL_CACHE_DIR=str(cache), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--former", action="store_true", help="also time the former implementation (minutes)")
    parser.add_argument("--repeats", type=int, default=2, help="warm and load measurements (default 2)")
    args = parse_json_out(parser)
    cueq, gaunt = quick_3bpa_model(many_body="cueq"), quick_3bpa_model(many_body="gaunt")
    record = start_record() | {"threads": 1, "seconds": {}}
    with tempfile.TemporaryDirectory() as folder:
        cache, export = Path(folder) / "cache", str(Path(folder) / "model.pt")
        seconds = record["seconds"]
        seconds["cold"] = measure("build", cache, model=cueq, export=export)
        seconds["warm"] = [measure("build", cache, model=cueq, export="") for _ in range(args.repeats)]
        seconds["load"] = [measure("load", cache, export=export) for _ in range(args.repeats)]
        seconds["gaunt"] = measure("build", cache, model=gaunt, export="")
        if args.former:
            seconds["former"] = measure("former", cache)
    finish_record(record, args.out)


if __name__ == "__main__":
    main()
