"""Reading pickled files without running their code.

A pickle is a program: unpickling calls whatever functions it names, so a crafted file runs code
the moment it is opened. equimol unpickles only through one of two allow-lists:

* **torch files** (model files, training checkpoints, CP-factor caches): :func:`load_torch_file`,
  ``torch.load(weights_only=True)``, torch's own unpickler that builds tensors, dicts, lists,
  tuples, strings and numbers and nothing else, with :data:`CHECKPOINT_GLOBALS` added to what it
  allows (empty: a checkpoint of ``equimol train`` holds nothing more, checked on every training
  configuration of the test suite). Lightning's ``--resume`` goes through the same function
  (:class:`equimol.train.checkpoints.AtomicCheckpointIO`).
* **data pickles** (fairchem-layout LMDB frames, OC20 per-system reference mappings):
  :func:`restricted_loads`, a :class:`pickle.Unpickler` whose ``find_class`` returns only the
  objects of :data:`FRAME_GLOBALS`: PyG ``Data`` and its storage, torch tensors and storages,
  numpy arrays, dtypes and scalars, ``OrderedDict``. A tensor's storage is pickled as a nested
  ``torch.save`` blob, which torch reads back with ``weights_only=False``; here it is read by
  :func:`_storage_from_bytes` with ``weights_only=True``. Nothing else is importable, so a frame
  that names ``os.system`` (or anything outside the list) is refused before anything runs.

A trusted file that needs one more class (an LMDB written by another tool) can name it in the
environment variable ``EQUIMOL_ALLOW_PICKLE_GLOBALS`` (``module.Name``, comma-separated); each name
extends the allow-list by exactly that object (``SECURITY.md``).

Every refusal is an :class:`UnsafeFileError` (a ``ValueError``: one line from the CLI, exit status 2)
that names the file and the refused object.
"""

from __future__ import annotations

import codecs
import collections
import importlib
import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from equimol.errors import EquimolInputError

ALLOW_VARIABLE = "EQUIMOL_ALLOW_PICKLE_GLOBALS"
# objects a checkpoint of `equimol train` holds beyond torch's weights-only set (measured: none)
CHECKPOINT_GLOBALS: tuple[Any, ...] = ()


class UnsafeFileError(EquimolInputError):
    """A file that asks to import or call something equimol never writes (the message names it)."""


def _storage_from_bytes(data: bytes):
    """A tensor storage from the nested ``torch.save`` blob of a pickled tensor, through the weights-only unpickler."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _frame_globals() -> dict[tuple[str, str], Any]:
    import numpy as np
    from torch_geometric.data import data as pyg_data
    from torch_geometric.data import storage as pyg_storage

    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("torch_geometric.data.data", "Data"): pyg_data.Data,
        ("torch_geometric.data.data", "DataEdgeAttr"): pyg_data.DataEdgeAttr,
        ("torch_geometric.data.data", "DataTensorAttr"): pyg_data.DataTensorAttr,
        ("torch_geometric.data.storage", "GlobalStorage"): pyg_storage.GlobalStorage,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
        ("_codecs", "encode"): codecs.encode,  # protocol-2 pickles of bytes
    }
    multiarray = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray")
    numeric = importlib.import_module("numpy._core.numeric" if hasattr(np, "_core") else "numpy.core.numeric")
    for module in ("numpy._core", "numpy.core"):  # numpy 2 writes the first, numpy 1 the second; both read
        allowed[(f"{module}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{module}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{module}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


_FRAME_GLOBALS: dict[tuple[str, str], Any] | None = None


def frame_globals() -> dict[tuple[str, str], Any]:
    """``{(module, name): object}`` that a data pickle may name (:data:`FRAME_GLOBALS` plus the environment's)."""
    global _FRAME_GLOBALS
    if _FRAME_GLOBALS is None:
        _FRAME_GLOBALS = _frame_globals()
    allowed = dict(_FRAME_GLOBALS)
    for entry in filter(None, (part.strip() for part in os.environ.get(ALLOW_VARIABLE, "").split(","))):
        module, _, name = entry.rpartition(".")
        try:
            allowed[(module, name)] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as error:
            raise UnsafeFileError(f"{ALLOW_VARIABLE}: {entry!r} names no importable object ({error})") from error
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that resolves only the objects of ``allowed`` (``{(module, name): object}``)."""

    def __init__(self, file, allowed: dict[tuple[str, str], Any]) -> None:
        super().__init__(file)
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafeFileError(f"{module}.{name}") from None


def restricted_loads(data: bytes, where: str, allowed: dict[tuple[str, str], Any] | None = None) -> Any:
    """Unpickle ``data`` allowing only ``allowed`` (default :func:`frame_globals`); ``where`` names it in errors.

    Raises:
        UnsafeFileError: the pickle names an object outside the allow-list (nothing of it has run).
        pickle.UnpicklingError, EOFError, ...: a damaged pickle, as :func:`pickle.loads` raises them.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), frame_globals() if allowed is None else allowed).load()
    except UnsafeFileError as error:
        raise UnsafeFileError(
            f"{where}: refused: the pickle asks for {error}, which is not among the types a data file holds "
            f"(PyG Data, tensors, numpy arrays); equimol never runs code from a data file. A trusted file written "
            f"by another tool may add exactly that name to {ALLOW_VARIABLE} (see SECURITY.md)"
        ) from None


def _refused_global(error: BaseException) -> str | None:
    match = re.search(r"GLOBAL ([\w.]+)", str(error))
    return match.group(1) if match else None


def load_torch_file(path: str | Path, kind: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with :data:`CHECKPOINT_GLOBALS` allowed.

    Args:
        path: the file.
        kind: what the file should be, for the message ("model file", "checkpoint", ...).

    Raises:
        UnsafeFileError: the file names an object outside the allow-list (it may be malicious; nothing ran).
        Exception: whatever ``torch.load`` raises for a damaged file (callers turn it into their own error).
    """
    try:
        with torch.serialization.safe_globals(list(CHECKPOINT_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = _refused_global(error)
        if refused is None:
            raise
        raise UnsafeFileError(
            f"{path}: refused to open this {kind}: it asks to import {refused}, which equimol never writes "
            "into its files; it may be malicious, or written by other software (nothing of it has run)"
        ) from None
