"""Rank against reconstruction error, equivariance error and time for the ``cp`` backend.

Usage: ``python benchmarks/cp_rank_table.py [--lmax 1,2,3] [--out FILE [--overwrite]]``

For each ``L`` the irreps are the benchmark's ``C x (0e + 1o + ... + Le)`` (x) ``0e + 1o + ... + Le``
and the ranks are TDN's options (``7 L``, ``16 floor(ln(L+1)^2)``, ``7 L^2``, ``(L+1)^4``) and the
exact rank of the parity-exact decomposition. Columns:

* ``rel_err``: ``||M - M~||_F / ||M||_F`` (float64);
* ``equiv_rmse``: mean over 50 random rotations and the same 50 composed with inversion of
  ``RMSE(cp(D x, D y, w), D cp(x, y, w))`` (TDN's metric), float64, 3 channels, 16 samples,
  unit-variance features, spherical-harmonic edge attributes and unit-variance per-channel weights;
* ``equiv_max``: the largest absolute defect over those matrices;
* ``bound_rms``: the root-mean-square over samples and channels of the derived bound
  ``2 eps ||M||_F |w| ||x|| ||y||`` divided by ``sqrt(d3)`` (an upper bound of ``equiv_rmse``);
* ``cp_rank`` is the rank asked for, ``rank`` the one used (a rank at or above the exact rank
  becomes the exact rank);
* ``fit_s``: the fit (fresh, no cache) in seconds, one thread;
* ``fwd_ms``: float32 forward at 32 channels and 2000 samples, one thread, fastest of 7
  (least disturbed by other jobs), ms
  (``cg`` on the same input for reference on the ``cg`` line).

Wigner D come from :func:`equimol.utils.symmetry.wigner_d` (least squares on e3nn's spherical harmonics, accurate to
a few ulps). The machine is shared with other jobs: times are indicative.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import timeit
import warnings
from pathlib import Path

import torch
from _common import check_outputs

from equimol.microbench.tp import benchmark_irreps
from equimol.tp import TensorProduct, to_channel_major
from equimol.utils.machine import describe_machine
from equimol.utils.symmetry import random_inputs, random_orthogonal_matrices, wigner_d


def ranks_for(lmax: int) -> list[int | str]:
    candidates = {7 * lmax, 16 * math.floor(math.log(lmax + 1) ** 2), 7 * lmax**2, (lmax + 1) ** 4}
    return [r for r in sorted(candidates) if r > 0] + ["exact"]


def forward_ms(tp, lmax: int) -> float:
    generator = torch.Generator().manual_seed(0)
    irreps = benchmark_irreps(lmax, 32)
    module = TensorProduct(*irreps, backend=tp.name, dtype=torch.float32, internal_weights=False, **tp.options)
    x1 = torch.randn(2000, module.irreps_in1.dim, generator=generator)
    x2 = torch.randn(2000, module.irreps_in2.dim, generator=generator)
    weight = torch.randn(2000, module.weight_numel, generator=generator)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: far steadier than two on a machine shared with other jobs
    with torch.no_grad():
        module(x1, x2, weight)
        fastest = min(timeit.repeat(lambda: module(x1, x2, weight), number=1, repeat=7))
    torch.set_num_threads(threads)
    return 1e3 * fastest


def equivariance(tp, representations) -> tuple[float, float, float]:
    x1, x2, weight = random_inputs(tp, count=16, seed=1)
    reference = tp(x1, x2, weight)
    rmse, worst = [], 0.0
    for d_features, d_edges in representations:
        defect = tp(x1 @ d_features.T, x2 @ d_edges.T, weight) - reference @ d_features.T
        rmse.append(defect.pow(2).mean().sqrt().item())
        worst = max(worst, defect.abs().max().item())
    if tp.name == "cg":
        return sum(rmse) / len(rmse), worst, 0.0
    x_norm = to_channel_major(x1, tp.irreps_in1).norm(dim=-1)
    w_norm = weight.view(16, -1, tp.channels).norm(dim=1)
    bound = 2 * tp.relative_error * tp.coupling_norm * w_norm * x_norm * x2.norm(dim=-1, keepdim=True)
    bound_rms = (bound.pow(2).mean() / (tp.irreps_out.dim // tp.channels)).sqrt().item()
    return sum(rmse) / len(rmse), worst, bound_rms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmax", default="1,2,3")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    if args.out is not None:
        check_outputs([args.out], args.overwrite)
    machine = describe_machine()
    lines = [f"# cp rank table; {machine.get('cpu', machine.get('device'))}, {machine.get('cpu_count')} cores, "
             f"torch {machine.get('torch')}; machine shared with other jobs: times are indicative", ""]  # fmt: skip
    header = f"{'L':>2} {'backend':>7} {'cp_rank':>7} {'rank':>6} {'rel_err':>9} {'equiv_rmse':>10} {'equiv_max':>9} "
    header += f"{'bound_rms':>9} {'fit_s':>7} {'fwd_ms':>8}"
    lines.append(header)
    print("\n".join(lines), flush=True)
    for lmax in (int(x) for x in args.lmax.split(",")):
        irreps = benchmark_irreps(lmax, 3)
        matrices = random_orthogonal_matrices(50, seed=lmax)
        features, edges = TensorProduct(*irreps, dtype=torch.float64).irreps_in1, irreps[1]
        representations = [(wigner_d(features, m), wigner_d(edges, m)) for m in matrices]
        rows = [("cg", {})] + [("cp", {"cp_rank": rank}) for rank in ranks_for(lmax)]
        for backend, options in rows:
            with tempfile.TemporaryDirectory() as cache, warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # low ranks miss fit_tolerance on purpose
                extra = {"cache_dir": cache} if backend == "cp" else {}
                start = time.perf_counter()
                tp = TensorProduct(*irreps, backend=backend, dtype=torch.float64, **options, **extra)
                fit_s = time.perf_counter() - start
                tp.options = {**options, **extra}
                mean_rmse, worst, bound_rms = equivariance(tp, representations)
                rank = getattr(tp, "rank", "-")
                rel_err = getattr(tp, "relative_error", 0.0)
                requested = options.get("cp_rank", "-")
                line = f"{lmax:>2} {backend:>7} {requested!s:>7} {rank!s:>6} {rel_err:>9.2e} "
                line += f"{mean_rmse:>10.2e} {worst:>9.2e} "
                line += f"{bound_rms:>9.2e} {fit_s if backend == 'cp' else 0.0:>7.2f} {forward_ms(tp, lmax):>8.2f}"
            lines.append(line)
            print(line, flush=True)
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
