"""Triton kernels for the message-passing hot path (installed as ``equimol.kernels``).

Importing this package checks that Triton can run and registers one fused message kernel,
``"triton"`` (:mod:`equimol.kernels.fused`), with the TP interface
(:func:`equimol.tp.register_message_kernel`). It serves every backend that provides a factored form
(:meth:`equimol.tp.TensorProductBackend.factored_form`; see :func:`equimol.tp.factored_backends`)
and names none. Select it with ``TensorProduct(..., kernel="triton")`` (add ``deterministic=True``
for a sorted segmented reduction instead of atomics), or ``tp_options: {kernel: triton}`` in a
model config. The interface imports this package on first use through the
``equimol.message_kernels`` entry point (``pyproject.toml``), never by name.

Triton runs on a CUDA GPU, or on the CPU through its interpreter when ``TRITON_INTERPRET=1`` is
set in the environment before this package is imported (about 400x slower than torch: for
tests). Without either, the import raises :class:`TritonUnavailableError` saying so.

Modules: :mod:`~equimol.kernels.message` (the Triton message kernels on the factored form),
:mod:`~equimol.kernels.edge_gradients` (per-edge gradients), :mod:`~equimol.kernels.launch` (host
side: checks, padding, launches), :mod:`~equimol.kernels.autograd` (the differentiable wrapper),
:mod:`~equimol.kernels.layout` (index maps), :mod:`~equimol.kernels.fused` (the registered kernel).

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

from equimol.kernels.autograd import fused_message_passing  # noqa: E402
from equimol.kernels.fused import factored_message_passing  # noqa: E402  (registers the "triton" kernel)

__all__ = ["TritonUnavailableError", "factored_message_passing", "fused_message_passing"]
