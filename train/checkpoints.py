"""Training checkpoints: written atomically, and exported to self-contained model files.

A checkpoint is Lightning's ``torch.save`` of the module's state plus ``model_config`` and, with
EMA, ``ema = {"shadow": {name: tensor}}`` (:mod:`equimol.train.module`). Every checkpoint is
written through :func:`equimol.utils.io.atomic_write`, so a killed run leaves its previous
``best.ckpt``/``last.ckpt`` whole. :func:`export_checkpoint` turns one into a model file
(:mod:`equimol.export`) holding the EMA weights when the run kept an average.

Every checkpoint is read by :func:`read_checkpoint` (``export``, ``eval``, the ``--resume`` check and
Lightning's own restore, through :meth:`AtomicCheckpointIO.load_checkpoint`): torch's weights-only
unpickler (:func:`equimol.safe_pickle.load_torch_file`), so a crafted checkpoint runs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from equimol.export import ModelFileError, export_model
from equimol.models import build_model
from equimol.utils.io import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` through :func:`~equimol.utils.io.atomic_write` (never half a checkpoint), read back by
    :func:`read_checkpoint` (never code)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_write(path) as handle:
            torch.save(checkpoint, handle)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        state = read_checkpoint(path)
        if map_location is not None:  # Lightning restores on the CPU and moves the module itself
            state = torch.utils._pytree.tree_map_only(torch.Tensor, lambda tensor: tensor.to(map_location), state)
        return state


def read_checkpoint(checkpoint: str | Path) -> dict:
    """The contents of a training checkpoint, through the weights-only unpickler (see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        UnsafeFileError: the file asks to import anything but tensors and plain values (nothing of it ran).
        ModelFileError: a damaged file, or not a checkpoint of ``equimol train``.
    """
    from equimol.safe_pickle import UnsafeFileError, load_torch_file

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} does not exist")
    try:
        state = load_torch_file(checkpoint, "checkpoint")
    except UnsafeFileError:
        raise
    except Exception as error:  # noqa: BLE001 - zip, pickle and I/O errors alike mean a damaged or foreign file
        raise ModelFileError(
            f"{checkpoint}: not a readable checkpoint, the file is damaged or of another kind "
            f"({type(error).__name__}); give a checkpoint of `equimol train` (run_dir/checkpoints/*.ckpt)"
        ) from error
    if isinstance(state, dict) and state.get("format") == "equimol-model":
        raise ModelFileError(
            f"{checkpoint}: is a model file, not a training checkpoint; it needs no export "
            "(use it directly with equimol eval or EquimolCalculator)"
        )
    if not isinstance(state, dict) or "model_config" not in state or "state_dict" not in state:
        raise ModelFileError(f"{checkpoint}: not a checkpoint written by `equimol train`")
    return state


def export_checkpoint(checkpoint: str | Path, path: str | Path, dtype: str | None = None) -> Path:
    """Export the model of a training checkpoint (``equimol train``), with its EMA weights when it has them.

    ``dtype`` (``"float32"``/``"float64"``) casts the exported model; its config records the new dtype.
    """
    checkpoint = Path(checkpoint)
    state = read_checkpoint(checkpoint)
    prefix = "model."
    weights = {k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    config = state["model_config"] if dtype is None else {**state["model_config"], "dtype": dtype}
    try:
        model = build_model(config)
        model.load_state_dict(weights, strict=True)
    except (ValueError, TypeError, KeyError, RuntimeError) as error:
        raise ModelFileError(
            f"{checkpoint}: the checkpoint's model cannot be rebuilt ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); it is damaged or from an incompatible equimol"
        ) from error
    if "ema" in state:
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, average in state["ema"]["shadow"].items():
                named[name].copy_(average.to(named[name].dtype))
    metadata = {
        "checkpoint": str(checkpoint.resolve()),
        "epoch": int(state.get("epoch", -1)),
        "global_step": int(state.get("global_step", -1)),
        "ema": "ema" in state,
    }
    return export_model(model, path, metadata)
