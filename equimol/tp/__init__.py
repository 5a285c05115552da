"""The tensor-product interface and its backends.

>>> from equimol.tp import TensorProduct, available_backends
>>> tp = TensorProduct("8x0e + 8x1o", "0e + 1o + 2e", "8x0e + 8x1o + 8x2e", backend="cg")

See :mod:`equimol.tp.interface` for the product, its normalization and the weight layouts.
"""

from equimol.tp import cg, cp, gaunt  # noqa: F401  (register the "cg", "cp" and "gaunt" backends)
from equimol.tp.factored import FactoredProduct, WeightGroup, register_message_kernel
from equimol.tp.interface import (
    TensorProduct,
    TensorProductBackend,
    available_backends,
    factored_backends,
    get_backend,
    register_backend,
)
from equimol.tp.irreps import from_channel_major, to_channel_major
from equimol.tp.paths import Path, allowed_paths

__all__ = [
    "FactoredProduct",
    "Path",
    "TensorProduct",
    "TensorProductBackend",
    "allowed_paths",
    "available_backends",
    "factored_backends",
    "from_channel_major",
    "get_backend",
    "register_backend",
    "register_message_kernel",
    "to_channel_major",
    "WeightGroup",
]
