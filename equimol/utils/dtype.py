"""dtype handling that never changes torch's global default dtype for the caller.

e3nn computes its constants (Wigner 3j symbols, the generators behind ``Irreps.D_from_matrix``)
in ``torch.get_default_dtype()``. Built in float32 and cast up, they stay float32-accurate
(about 1e-6 equivariance error in float64). equimol therefore builds every constant inside
:func:`float64_construction` and casts it to the module's dtype afterwards.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from equimol.errors import EquimolInputError

_LOCK = threading.RLock()

_DTYPE_NAMES = {
    "float32": torch.float32,
    "float": torch.float32,
    "fp32": torch.float32,
    "32": torch.float32,
    "float64": torch.float64,
    "double": torch.float64,
    "fp64": torch.float64,
    "64": torch.float64,
}


@contextlib.contextmanager
def float64_construction() -> Iterator[None]:
    """Run a block with float64 as torch's default dtype, then restore the caller's default.

    Only for building constants (third-party code that reads the default dtype). The previous
    default is restored even if the block raises, so the global state seen by users is unchanged.
    """
    with _LOCK:
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            yield
        finally:
            torch.set_default_dtype(previous)


def resolve_dtype(dtype: torch.dtype | str | int | None) -> torch.dtype:
    """Turn ``None`` (torch's default), a torch dtype or a name ("float32", "float64", 64) into a dtype."""
    if dtype is None:
        return torch.get_default_dtype()
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise EquimolInputError(f"dtype must be a floating-point dtype, got {dtype}")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPE_NAMES:
        raise EquimolInputError(f"unknown dtype {dtype!r}; expected one of float32, float64")
    return _DTYPE_NAMES[key]
