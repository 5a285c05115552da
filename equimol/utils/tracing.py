"""Whether the code runs under a graph tracer, where checks on tensor values cannot run."""

from __future__ import annotations

import torch


def tracing() -> bool:
    """True under ``torch.compile``/``torch.export`` (dynamo) or ``make_fx`` (a proxy dispatch mode).

    A traced graph cannot branch on tensor values (``GuardOnDataDependentSymNode``), so value checks
    (index bounds, unknown elements) are skipped there; the callers of a traced graph check those inputs
    before the call (:mod:`equimol.compiled`).
    """
    from torch.fx.experimental.proxy_tensor import get_proxy_mode

    return torch.compiler.is_compiling() or get_proxy_mode() is not None
