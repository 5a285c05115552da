"""equimol: equivariant machine-learning interatomic potentials with swappable tensor products.

The tensor-product interface lives in :mod:`equimol.tp`; backends ``cg`` (exact Clebsch-Gordan via
e3nn), ``gaunt`` (Gaunt product in the Fourier / sphere-grid basis) and ``cp`` (CP-decomposed, TDN)
register themselves there.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("equimol")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
