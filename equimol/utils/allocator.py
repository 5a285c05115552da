"""Keep freed CPU memory in the process for reuse (glibc malloc), instead of handing it back to the OS.

PyTorch's CPU allocator has no cache: every tensor is a ``malloc``/``free``. glibc serves a block of
more than ``M_MMAP_THRESHOLD`` bytes (128 KiB, raised dynamically up to 32 MiB) with a fresh ``mmap`` and
unmaps it on ``free``, and trims the heap's top whenever more than ``M_TRIM_THRESHOLD`` bytes are free.
A training step of an MLIP allocates hundreds of per-edge tensors of a few MiB each, so every step
page-faults those megabytes in again, and on a virtual machine a page fault is expensive; keeping the
memory mapped removes those faults (the README's training benchmarks measure the effect).

:func:`retain_freed_memory` sets, through ``mallopt``:

* ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's maximum): blocks up to 32 MiB come from the heap;
* ``M_TRIM_THRESHOLD`` = -1 (``man mallopt``: never trim): freed heap memory stays mapped, so the
  resident set keeps its peak;
* ``M_TOP_PAD`` = 256 MiB: the heap grows in large steps (virtual memory; pages are touched on use).

This is what the usual advice for PyTorch on CPUs (a caching allocator such as jemalloc or tcmalloc
through ``LD_PRELOAD``) achieves, without a system package. It changes how memory is reused, not any
result. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
SETTINGS: dict[int, int] = {
    _M_MMAP_THRESHOLD: 32 * 1024**2,
    _M_TRIM_THRESHOLD: -1,
    _M_TOP_PAD: 256 * 1024**2,
}


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


def retain_freed_memory() -> bool:
    """Apply :data:`SETTINGS` to this process's glibc malloc (see the module docstring).

    Returns:
        True if every setting was accepted; False where the C library is not glibc (nothing changed).
    """
    libc = _libc()
    if libc is None:
        return False
    # mallopt returns 1 on success, 0 for a value it refuses
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in SETTINGS.items())
