r"""Backend ``cg``: the exact Clebsch-Gordan tensor product, e3nn's coefficients.

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

**Strategies** (the same product to round-off; ``tests/test_tp_cg.py`` checks both against each other
and the exact reference):

* ``"e3nn"``: e3nn's ``o3.TensorProduct`` (one generated kernel per path).
* ``"edge"``: the second operand first. With ``R`` rows ``r = (p, m_1)``, one per path and input
  component, the weighted copies ``a_{n r u} = w_{n p u} x_{n u m_1}`` (``[N, R, C]``) meet the
  per-sample coupling ``K_n = y_n \cdot \mathcal{C}`` (``[N, d_3, R]``, one GEMM of ``y`` with the
  stacked, normalized 3j tensor ``\mathcal{C}[m_2, (k, r)]``) in one batched GEMM ``z_n = K_n a_n``
  per input irrep (rows grouped by the irrep they start from). In message passing the layouts are
  converted per node, before the gather and after the sum, so the per-edge work is these GEMMs only.
  Cost ``d_2 d_3 R + d_3 R C`` multiply-adds per sample, in three large operations instead of a few
  small ones per path: on a CPU the per-path kernels' launches and the zero-filled gradients of their
  slices dominate e3nn's time for the MLIP shapes (``C = 32``, ``L <= 3``).
* ``"auto"``: ``"edge"`` (faster on every shape measured, see :meth:`CGTensorProduct.choose`).
"""

from __future__ import annotations

import torch
from e3nn import o3

from equimol.tp.interface import TensorProductBackend, register_backend
from equimol.tp.irreps import IrrepsLike, component_major_index
from equimol.utils.dtype import float64_construction

STRATEGIES = ("auto", "e3nn", "edge")


def path_couplings(tensor_product: o3.TensorProduct, paths_count: int) -> torch.Tensor:
    """The normalized coupling of every path of a uvu ``tensor_product``, read off channel 0.

    Returns:
        ``[paths_count, irreps_in1.dim / C, irreps_in2.dim, irreps_out.dim / C]`` float64 with
        entry ``[p, a, b, c]`` = output component ``c`` (channel 0) of path ``p`` alone (weight 1)
        for the unit inputs ``x1 = e_a`` (channel 0) and ``x2 = e_b``, components in irreps order.
        Probing the e3nn product itself keeps every normalization factor exactly as e3nn has it.
    """
    irreps1, irreps2, irreps_out = tensor_product.irreps_in1, tensor_product.irreps_in2, tensor_product.irreps_out
    channels = irreps1[0].mul
    rows1 = component_major_index(irreps1).view(-1, channels)[:, 0]  # channel-0 positions, irreps order
    rows_out = component_major_index(irreps_out).view(-1, channels)[:, 0]
    d1, d2 = rows1.numel(), irreps2.dim
    x1 = torch.zeros(d1 * d2, irreps1.dim, dtype=torch.float64)
    x1[torch.arange(d1 * d2), rows1.repeat_interleave(d2)] = 1.0
    x2 = torch.eye(d2, dtype=torch.float64).repeat(d1, 1)
    couplings = []
    for p in range(paths_count):
        weight = torch.zeros(d1 * d2, paths_count, channels, dtype=torch.float64)
        weight[:, p, 0] = 1.0
        with torch.no_grad():
            out = tensor_product(x1, x2, weight.flatten(1))
        couplings.append(out[:, rows_out].view(d1, d2, -1))
    return torch.stack(couplings)


@register_backend("cg")
class CGTensorProduct(TensorProductBackend):
    """Exact channel-wise CG tensor product (mode ``uvu``), see the module docstring.

    Args:
        irreps_in1, irreps_in2, irreps_out: see :func:`equimol.tp.TensorProduct`.
        strategy: ``"e3nn"``, ``"edge"`` or ``"auto"``.
        **base_options: ``internal_weights``, ``dtype``, ``device``, ``kernel``, ``deterministic``
            (see :class:`~equimol.tp.interface.TensorProductBackend`); coefficients are built in
            float64 whatever the dtype.

    Attributes:
        strategy: the strategy in use (``"auto"`` resolved).
    """

    def __init__(
        self,
        irreps_in1: IrrepsLike,
        irreps_in2: IrrepsLike,
        irreps_out: IrrepsLike,
        *,
        strategy: str = "auto",
        **base_options,
    ) -> None:
        super().__init__(irreps_in1, irreps_in2, irreps_out, **base_options)
        self.strategy = self._resolve_choice("strategy", strategy, STRATEGIES, self.choose)
        instructions = [(p.i1, p.i2, p.i_out, "uvu", True) for p in self.paths]
        # e3nn computes its Wigner 3j constants in the default dtype: build them in float64.
        with float64_construction():
            tensor_product = o3.TensorProduct(
                self.irreps_in1,
                self.irreps_in2,
                self.irreps_out,
                instructions,
                irrep_normalization="component",
                path_normalization="element",
                internal_weights=False,
                shared_weights=False,
            )
        self.weight_numel = tensor_product.weight_numel
        if self.strategy == "e3nn":
            self.tensor_product = tensor_product
        else:
            self._build_edge(tensor_product)
        self._finish_construction()

    @staticmethod
    def choose() -> str:
        """``"edge"``: in ``equimol bench tp`` (float32, 32 channels, 2000 edges, one thread, L = 1..6) it
        beat e3nn's per-path kernels forward and forward+backward at every L (README, TP speed)."""
        return "edge"

    def _build_edge(self, tensor_product: o3.TensorProduct) -> None:
        # Rows grouped by input irrep: group g holds (p, m1) for the paths p leaving irrep g, so that its
        # weighted copies are one broadcast product w[:, paths_g, None] * x[:, block_g] (no per-row gather)
        # and its coupling [d2, d3 * R_g] is one GEMM; the groups' batched GEMMs are summed.
        couplings = path_couplings(tensor_product, len(self.paths))  # [P, d1, d2, d3]
        starts1 = [sl.start // self.channels for sl in self.irreps_in1.slices()]
        self.edge_groups: list[tuple[int, int, int]] = []  # (component start, component count, rows)
        for i1, (_, ir) in enumerate(self.irreps_in1):
            paths = [p for p, path in enumerate(self.paths) if path.i1 == i1]
            if not paths:
                continue
            start = starts1[i1]
            block = couplings[paths, start : start + ir.dim]  # [P_g, d1_g, d2, d3]
            stacked = block.permute(2, 3, 0, 1).reshape(block.shape[2], -1)  # [d2, d3 * P_g * d1_g]
            group = len(self.edge_groups)
            self.register_buffer(f"edge_coupling_{group}", stacked.contiguous())
            self.register_buffer(f"edge_paths_{group}", torch.tensor(paths, dtype=torch.long), persistent=False)
            self.edge_groups.append((start, ir.dim, len(paths) * ir.dim))
        for name, index in (
            ("gather_in1", component_major_index(self.irreps_in1)),
            ("gather_out", torch.argsort(component_major_index(self.irreps_out))),
        ):
            self.register_buffer(name, index, persistent=False)

    def product_layout(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``edge`` computes on component-major features (:func:`~equimol.tp.irreps.component_major_index`)."""
        return None if self.strategy == "e3nn" else (self.gather_in1, self.gather_out)

    def _product_in_layout(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``edge``: ``x1`` ``[N, d1 * C]`` component-major, ``x2`` ``[N, d2]``, ``weight`` ``[N, weight_numel]``
        -> ``[N, d3 * C]`` component-major (explicit sizes: an edgeless graph cannot infer a -1 dimension)."""
        count, channels = x1.shape[0], self.channels
        d1, d3 = self.irreps_in1.dim // channels, self.irreps_out.dim // channels
        x = x1.view(count, d1, channels)
        weights = weight.view(count, len(self.paths), channels)
        out = None
        for group, (start, dim, rows_count) in enumerate(self.edge_groups):
            picked = weights.index_select(1, getattr(self, f"edge_paths_{group}"))  # [N, P_g, C]
            rows = (picked.unsqueeze(2) * x[:, start : start + dim].unsqueeze(1)).view(count, rows_count, channels)
            matrices = (x2 @ getattr(self, f"edge_coupling_{group}")).view(count, d3, rows_count)
            out = torch.bmm(matrices, rows) if out is None else torch.baddbmm(out, matrices, rows)
        if out is None:  # no path at all
            return x1.new_zeros(count, d3 * channels)
        return out.view(count, d3 * channels)

    def _product(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.strategy == "e3nn":
            return self.tensor_product(x1, x2, weight)
        return super()._product(x1, x2, weight)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, strategy={self.strategy!r}"
