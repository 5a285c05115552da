"""Many-body self-products, one module per kind, chosen by ``model.many_body`` through a registry.

>>> from equimol.manybody import available, many_body_product
>>> product = many_body_product("cg", channels=8, lmax=2, correlation=3, num_elements=4)

- :mod:`~equimol.manybody.cg`: recursive channel-wise Clebsch-Gordan coupling, MACE-style;
- :mod:`~equimol.manybody.gaunt`: powers of the node's sphere function on a grid (Luo et al. 2024);
- :mod:`~equimol.manybody.cueq`: cuEquivariance's symmetric contraction (the ``cueq`` extra).

See :mod:`equimol.manybody.registry` for what a kind is and how it registers.
"""

from equimol.manybody import cg, gaunt  # noqa: E402, F401, I001  (register "cg" and "gaunt", after the registry)
from equimol.manybody.registry import available, kinds, many_body_product, register_many_body

__all__ = ["available", "kinds", "many_body_product", "register_many_body"]
