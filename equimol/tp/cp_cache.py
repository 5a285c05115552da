r"""The disk cache of fitted CP factors (:mod:`equimol.tp.cp_fit`).

**Cache.** Factors are stored under ``cache_dir/cp_factors/<sha256 of the key>.pt``; the key holds
the irreps, rank, weight mode, tolerance, seed, normalization, dtype and the equimol version.
Writes go through :func:`equimol.utils.io.atomic_write`. A file is trusted only if it loads, its key
matches, its shapes, dtype and checksum are right and the factors reproduce ``M`` to the stored
error; otherwise it is refitted and overwritten (with a warning).
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path

import torch

from equimol.tp.cp_coupling import CPFactors, parity_mask, relative_error
from equimol.utils.io import atomic_write, cache_root

_FORMAT = 1


def default_cache_dir() -> Path:
    """The CP-factor cache root: :func:`equimol.utils.io.cache_root`."""
    return cache_root()


def cache_path(key: dict, cache_dir: str | os.PathLike | None) -> Path:
    """``<cache_dir>/cp_factors/<sha256(key)>.pt``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:32]
    return root / "cp_factors" / f"{digest}.pt"


def _checksum(key: dict, tensors: list[torch.Tensor]) -> str:
    digest = hashlib.sha256(repr(sorted(key.items())).encode())
    for tensor in tensors:
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_factors(path: Path, key: dict, factors: CPFactors) -> None:
    """Write ``factors`` under ``path`` through :func:`~equimol.utils.io.atomic_write`."""
    tensors = [factors.A, factors.B, factors.C, factors.term_path]
    payload = {
        "format": _FORMAT,
        "key": dict(key),
        "A": factors.A,
        "B": factors.B,
        "C": factors.C,
        "term_path": factors.term_path,
        "relative_error": factors.relative_error,
        "exact": factors.exact,
        "iterations": factors.iterations,
        "fit_seconds": factors.fit_seconds,
        "checksum": _checksum(key, tensors),
    }
    with atomic_write(path) as handle:
        torch.save(payload, handle)


def load_factors(path: Path, key: dict, M: torch.Tensor, parities, num_paths: int = 1) -> CPFactors:
    """Read and validate cached factors; ValueError saying what is wrong with the file otherwise."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file is corrupt, whatever torch raises
        raise ValueError(f"cannot read {path}: {type(error).__name__}: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(f"{path} is not an equimol CP-factor file of format {_FORMAT}")
    if payload.get("key") != key:
        raise ValueError(f"{path} is stale: its key {payload.get('key')} differs from {key}")
    A, B, C, term_path = (payload.get(name) for name in ("A", "B", "C", "term_path"))
    d1, d2, d3 = M.shape
    if not all(isinstance(t, torch.Tensor) for t in (A, B, C, term_path)):
        raise ValueError(f"{path} lacks one of the tensors A, B, C, term_path")
    rank = A.shape[-1]
    shapes_ok = A.shape == (d1, rank) and B.shape == (d2, rank) and C.shape == (rank, d3) and term_path.shape == (rank,)
    dtypes_ok = all(t.dtype == torch.float64 for t in (A, B, C)) and term_path.dtype == torch.int64
    if not shapes_ok or not dtypes_ok:
        raise ValueError(f"{path} holds factors of the wrong shape or dtype for M of shape {tuple(M.shape)}")
    if rank and (term_path.min() < 0 or term_path.max() >= num_paths):
        raise ValueError(f"{path} assigns terms to paths outside 0..{num_paths - 1}")
    if payload.get("checksum") != _checksum(key, [A, B, C, term_path]):
        raise ValueError(f"{path} fails its checksum")
    try:
        stored = float(payload["relative_error"])
        report = bool(payload["exact"]), int(payload["iterations"]), float(payload["fit_seconds"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} has a malformed fit report: {error!r}") from error
    measured = relative_error(M, A, B, C, parity_mask(*parities))
    # the stored error was measured on the same float64 tensors: agreement to rounding is required
    if not math.isfinite(measured) or abs(measured - stored) > 1e-9 + 1e-6 * stored:
        raise ValueError(f"{path}: the factors reproduce M to {measured:.3e}, not the stored {stored:.3e}")
    return CPFactors(A, B, C, term_path, measured, *report)


def cached_fit(
    key: dict, M: torch.Tensor, parities, fit, cache_dir: str | os.PathLike | None, num_paths: int = 1
) -> CPFactors:
    """Load the factors for ``key`` from the cache, or call ``fit()`` and store the result.

    A corrupt or stale file is never trusted: it is reported with a warning, refitted and replaced.
    """
    path = cache_path(key, cache_dir)
    if path.exists():
        try:
            return load_factors(path, key, M, parities, num_paths)
        except ValueError as error:
            warnings.warn(f"refitting CP factors: {error}", RuntimeWarning, stacklevel=3)
    factors = fit()
    try:
        save_factors(path, key, factors)
    except OSError as error:  # a read-only cache must not stop the model from being built
        warnings.warn(f"could not write the CP-factor cache {path}: {error}", RuntimeWarning, stacklevel=3)
    return factors
