r"""Backend ``cg``: the exact Clebsch-Gordan tensor product through e3nn.

.. math::

    z^{(l_3)}_{n,u,m_3} = \sum_{(l_1, l_2) \to l_3} \frac{w_{n,p,u}}{\sqrt{F_{l_3}}}
        \sqrt{2 l_3 + 1}\; \sum_{m_1 m_2} C^{l_1 l_2 l_3}_{m_1 m_2 m_3}\, x^{(l_1)}_{n,u,m_1}\, y^{(l_2)}_{n,m_2}

with e3nn's Wigner 3j symbols ``C`` (unit Frobenius norm), component normalization and
``F_{l_3}`` the number of paths reaching ``l_3`` (``path_normalization="element"``).

**Paths**: every parity- and triangle-allowed ``(l1, l2) -> l3`` between the given irreps
(:func:`equimol.tp.paths.allowed_paths`), including odd ``l1 + l2 + l3`` (e.g. the cross product
``1o x 1o -> 1e``). Cost O(L^6) per channel at maximum degree L.

**Weights**: one per path and channel, ``weight_numel = n_paths * C``; per sample the weight
vector is ``weight.view(N, n_paths, C)`` with paths in :attr:`paths` order.
"""

from __future__ import annotations

import torch
from e3nn import o3

from equimol.tp.interface import TensorProductBackend, register_backend
from equimol.tp.irreps import IrrepsLike
from equimol.utils.dtype import float64_construction


@register_backend("cg")
class CGTensorProduct(TensorProductBackend):
    """Exact channel-wise CG tensor product (e3nn ``o3.TensorProduct``, mode ``uvu``).

    Args:
        irreps_in1, irreps_in2, irreps_out: see :func:`equimol.tp.TensorProduct`.
        **base_options: ``internal_weights``, ``dtype``, ``device``, ``kernel``, ``deterministic``
            (see :class:`~equimol.tp.interface.TensorProductBackend`); coefficients are built in
            float64 whatever the dtype.
    """

    def __init__(
        self,
        irreps_in1: IrrepsLike,
        irreps_in2: IrrepsLike,
        irreps_out: IrrepsLike,
        **base_options,
    ) -> None:
        super().__init__(irreps_in1, irreps_in2, irreps_out, **base_options)
        instructions = [(p.i1, p.i2, p.i_out, "uvu", True) for p in self.paths]
        # e3nn computes its Wigner 3j constants in the default dtype: build them in float64.
        with float64_construction():
            self.tensor_product = o3.TensorProduct(
                self.irreps_in1,
                self.irreps_in2,
                self.irreps_out,
                instructions,
                irrep_normalization="component",
                path_normalization="element",
                internal_weights=False,
                shared_weights=False,
            )
        self.weight_numel = self.tensor_product.weight_numel
        self._finish_construction()

    def _product(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self.tensor_product(x1, x2, weight)
