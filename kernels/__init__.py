"""Triton kernels for the message-passing hot path (installed as ``equimol.kernels``).

Importing this package checks that Triton can run and registers the fused message kernels with
the TP interface (:func:`equimol.tp.register_message_kernel`). Select them with
``TensorProduct(..., kernel="triton")`` (add ``deterministic=True`` for a sorted segmented
reduction instead of atomics), or ``tp_options: {kernel: triton}`` in a model config.

Triton runs on a CUDA GPU, or on the CPU through its interpreter when ``TRITON_INTERPRET=1`` is
set in the environment before this package is imported (about 400x slower than torch: for
tests). Without either, the import raises :class:`TritonUnavailableError` saying so.

Kernels provided: ``cp`` (:mod:`equimol.kernels.cp`, shared or per-path weights) and ``gaunt``
(:mod:`equimol.kernels.gaunt`, the sphere-grid form, either strategy), both through one fused
gather-product-scatter kernel on the factored form of :mod:`equimol.kernels.factored`.

* **forward**: fused; atomic (default) or receiver-sorted segmented reduction (``deterministic``).
* **backward** (first derivatives: forces at inference, ``create_graph=False``): Triton kernels,
  the node-feature gradient with the same atomic / deterministic choice.
* **double backward** (force training, ``create_graph=True``): falls back to the torch path (the
  backend's own product, differentiated by autograd), see :mod:`equimol.kernels.autograd`.
"""

from __future__ import annotations

import os


class TritonUnavailableError(RuntimeError):
    """Raised on import when neither a CUDA GPU nor the Triton interpreter is available."""


def _interpreter_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def _check_triton_can_run() -> None:
    try:
        import triton  # noqa: F401
    except ImportError as error:
        raise TritonUnavailableError(
            "kernel='triton' needs the 'triton' package (pip install triton, Linux only); use kernel='torch' otherwise"
        ) from error
    if _interpreter_requested():
        return
    import torch

    if not torch.cuda.is_available():
        raise TritonUnavailableError(
            "kernel='triton' needs a CUDA GPU, or the Triton CPU interpreter: set the environment variable "
            "TRITON_INTERPRET=1 before importing equimol (slow, meant for tests); otherwise use kernel='torch'"
        )


_check_triton_can_run()

from equimol.kernels import cp, gaunt  # noqa: E402, F401  (register the "cp" and "gaunt" triton kernels)
from equimol.kernels.autograd import fused_message_passing  # noqa: E402
from equimol.kernels.launch import FactoredProduct  # noqa: E402

#: Backends with a registered ``kernel="triton"`` message-passing kernel.
FUSED_BACKENDS = ("cp", "gaunt")

__all__ = ["FUSED_BACKENDS", "FactoredProduct", "TritonUnavailableError", "fused_message_passing"]
