"""equimol.utils.allocator: large blocks come from the heap and stay there after free (glibc only)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from equimol.utils.allocator import _libc

# glibc's own accounting (mallinfo2): bytes in mmapped blocks (hblkhd) and the heap's size (arena) around
# allocating and freeing a 16 MiB tensor, in a fresh process (mallopt settings last for the process).
PROBE = """
import ctypes, json, sys, torch
from equimol.utils.allocator import _libc, retain_freed_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = _libc()
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "retain":
    assert retain_freed_memory()
before = libc.mallinfo2()
block = torch.empty(4 * 1024**2).fill_(1.0)
held = libc.mallinfo2()
del block
after = libc.mallinfo2()
print(json.dumps({"mmapped": held.hblkhd - before.hblkhd, "heap_given_back": held.arena - after.arena}))
"""


def _probe(mode: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(_libc() is None or not hasattr(_libc(), "mallinfo2"), reason="needs glibc >= 2.33")
def test_large_blocks_come_from_the_heap_and_stay_there():
    assert _probe("default")["mmapped"] >= 16 * 1024**2  # the contrast: glibc's defaults map this block
    retained = _probe("retain")
    assert retained["mmapped"] == 0
    assert retained["heap_given_back"] == 0


def test_training_retains_memory_by_default_and_may_change_it_on_resume():
    from equimol.train.config import TrainerConfig
    from equimol.train.run_folder import RESUMABLE

    assert TrainerConfig().retain_freed_memory is True
    assert "retain_freed_memory" in RESUMABLE["trainer"]
