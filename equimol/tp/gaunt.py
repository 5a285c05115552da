r"""Backend ``gaunt``: the Gaunt tensor product (Luo, Chen and Krishnapriyan, ICLR 2024), in O(L^3).

Each channel ``u`` of the inputs becomes a function on the sphere, the two functions are
multiplied, and the product is projected back onto the output degrees:

.. math::

    f_1(s) = \sum_{i_1} w_{1,n u i_1}\, x^{(i_1)}_{n u} \cdot Y_{l_{i_1}}(s), \qquad
    f_2(s) = \sum_{i_2} w_{2,n u i_2}\, y^{(i_2)}_{n} \cdot Y_{l_{i_2}}(s),

    z^{(i_3)}_{n u m_3} = w_{3,n u i_3}\, \frac{\sqrt{4\pi}}{\sqrt{F_{i_3}}}
        \int_{S^2} f_1 f_2\, Y_{l_3 m_3}\, d\Omega
      = w_3 \frac{\sqrt{4\pi}}{\sqrt{F_{i_3}}} \sum G^{l_1 l_2 l_3}_{m_1 m_2 m_3} a_1 a_2,

with e3nn's orthonormal real harmonics ``Y`` and the Gaunt coefficients ``G = int Y Y Y``. This is
the uvu product with coupling ``G`` (a CG coefficient times a per-path scalar, nonzero only for
even ``l1 + l2 + l3``). ``F_{i3} = sum_paths (2 l1 + 1)(2 l2 + 1) (l1 l2 l3; 0 0 0)^2`` sums over
the even paths into output irrep ``i3``: with unit-variance inputs, spherical-harmonic ``x2`` and
unit weights every output component has unit variance (the interface's convention); outputs no
path reaches are zero. The ground truth is ``tests/harness.py::gaunt_reference``.

**Irreps**: parity ``(-1)^l`` only (``0e, 1o, 2e, ...``) in all three; no odd path (no cross
product ``1o x 1o -> 1e``). Other irreps raise ValueError pointing to ``cg``.

**Weights**: per (channel, irrep) on each input and the output, not per path:
``weight_numel = C * (len(irreps_in1) + len(irreps_in2) + len(irreps_out))``, laid out as
``cat(w1.flatten(1), w2.flatten(1), w3.flatten(1))`` with ``w1`` ``[N, C, n1]`` (channel-major), etc.
Internal weights start standard normal (unit variance, as for every backend).

**Strategies** (same result to round-off):

* ``"grid"``: evaluate both functions on a Gauss-Legendre x uniform grid exact for the product up
  to the output degree (:mod:`~equimol.tp.sphere_grid`), multiply, project back, in blocks of
  quadrature-point pairs with a backward that recomputes them (:mod:`~equimol.tp.gaunt_grid`);
  O(L^3) per channel, separable matrix products only.
* ``"edge"``: the dense Gaunt tensor contracted with ``x2`` first, one ``[d3, n2 d1]`` matrix per
  sample applied to its ``C`` channels by one batched GEMM, with a hand-written backward
  (:mod:`~equimol.tp.gaunt_edge`): O(L^6 + C L^4) per sample, fastest at small L.
* ``"edge"`` with ``compile_edge_product=True``: the sparse Gaunt entries unrolled on ``[N, C]`` slices and
  fused by ``torch.compile`` (:mod:`~equimol.tp.gaunt_compiled`), forward and backward; compiled
  on the first call, with an eager fallback. Up to :data:`~equimol.tp.gaunt_compiled.COMPILE_MAX_ENTRIES`
  coupling entries (L = 3 on all three operands).
* ``"auto"``: :meth:`GauntTensorProduct.choose`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
from e3nn import o3

from equimol.tp.factored import FactoredProduct, WeightGroup
from equimol.tp.gaunt_compiled import CompiledEdge, SparseCoupling, weight_gather
from equimol.tp.gaunt_edge import EdgeOperators, edge_product
from equimol.tp.gaunt_grid import GridOperators, build_grid_constants, grid_product
from equimol.tp.interface import TensorProductBackend, register_backend
from equimol.tp.irreps import IrrepsLike, component_irreps, component_major_index
from equimol.tp.sphere_grid import dense_grid_matrices, real_gaunt_coefficients

#: Strategies of the two-input product.
PRODUCT_STRATEGIES = ("auto", "grid", "edge")
#: Largest degree for which ``"auto"`` picks ``"edge"``; see :meth:`GauntTensorProduct.choose`.
EDGE_MAX_DEGREE = 3


def three_j_zero_squared(l1: int, l2: int, l3: int) -> float:
    """``(l1 l2 l3; 0 0 0)^2`` (Racah's closed form); zero for odd ``l1 + l2 + l3`` or outside the triangle."""
    total = l1 + l2 + l3
    if total % 2 or l3 > l1 + l2 or l3 < abs(l1 - l2):
        return 0.0
    g = total // 2
    f = math.factorial
    value = f(2 * g - 2 * l1) * f(2 * g - 2 * l2) * f(2 * g - 2 * l3) / f(2 * g + 1)
    return value * (f(g) / (f(g - l1) * f(g - l2) * f(g - l3))) ** 2


def gaunt_fan_in(degrees_in1: list[int], degrees_in2: list[int], l3: int) -> float:
    """``F = sum (2 l1 + 1)(2 l2 + 1)(l1 l2 l3; 0 0 0)^2`` over all input pairs: the variance of the raw product."""
    return sum(
        (2 * l1 + 1) * (2 * l2 + 1) * three_j_zero_squared(l1, l2, l3) for l1 in degrees_in1 for l2 in degrees_in2
    )


def check_natural_parity(tp: TensorProductBackend, irreps: o3.Irreps, name: str) -> None:
    """Raise the backend's ValueError for any irrep of ``irreps`` whose parity is not ``(-1)^l``."""
    for _, ir in irreps:
        if ir.p != (-1) ** ir.l:
            raise tp._unsupported(
                f"{name} contains {ir}, but the Gaunt product only serves parity (-1)^l irreps (0e, 1o, 2e, 3o, ...)"
            )


class SlotLayout:
    """Map features in an irreps layout (``[..., D]``, channel-major) to and from the slot layouts.

    ``canonical_index[c]`` is the canonical position ``l^2 + l + m`` of irreps component ``c``;
    ``unique`` says whether every degree appears at most once (then slots gather directly).
    """

    def __init__(self, irreps: o3.Irreps) -> None:
        self.lmax = max(ir.l for _, ir in irreps)
        self.degrees = [ir.l for _, ir in irreps]
        self.unique = len(set(self.degrees)) == len(self.degrees)
        canonical = [index for _, ir in irreps for index in range(ir.l * ir.l, (ir.l + 1) ** 2)]
        self.dim = len(canonical)
        self.canonical_index = torch.tensor(canonical, dtype=torch.long)
        self.irrep_of_component = component_irreps(irreps)

    def source_index(self, slot_to_canonical: torch.Tensor) -> torch.Tensor:
        """Index into ``cat(features, 0)`` (unique degrees) or ``cat(canonical, 0)`` for every slot."""
        canonical_count = (self.lmax + 1) ** 2
        if not self.unique:
            return slot_to_canonical.flatten()
        component_of_canonical = torch.full((canonical_count + 1,), self.dim, dtype=torch.long)
        component_of_canonical[self.canonical_index] = torch.arange(self.dim)
        return component_of_canonical[slot_to_canonical.flatten()]

    def rows_to_slots(self, features: torch.Tensor, source_index: torch.Tensor) -> torch.Tensor:
        """Feature-major ``[D, B]`` in the irreps layout -> ``[slots, B]`` (repeated degrees are summed)."""
        if not self.unique:
            canonical = features.new_zeros((self.lmax + 1) ** 2, features.shape[1])
            features = canonical.index_add(0, self.canonical_index.to(features.device), features)
        padded = torch.cat([features, features.new_zeros(1, features.shape[1])], dim=0)
        return padded.index_select(0, source_index)


@register_backend("gaunt")
class GauntTensorProduct(TensorProductBackend):
    """Gaunt channel-wise tensor product (see the module docstring for the mathematics).

    Args:
        irreps_in1, irreps_in2, irreps_out: see :func:`equimol.tp.TensorProduct`; parity ``(-1)^l`` only.
        strategy: ``"grid"``, ``"edge"`` or ``"auto"`` (:meth:`choose`).
        compile_edge_product: run the ``"edge"`` strategy as a ``torch.compile``-fused sparse product
            (:mod:`~equimol.tp.gaunt_compiled`; compiled on the first call, eager fallback with a
            warning if compilation fails). ValueError with the ``"grid"`` strategy or when the
            coupling has more than :data:`~equimol.tp.gaunt_compiled.COMPILE_MAX_ENTRIES` entries.
        **base_options: ``internal_weights``, ``dtype``, ``device``, ``kernel``, ``deterministic``
            (see :class:`~equimol.tp.interface.TensorProductBackend`); constants are built in float64.

    Attributes:
        strategy: the strategy in use (``"auto"`` resolved).
        weight_numel: ``C * (n1 + n2 + n_out)``.
    """

    # older spellings of options, still read from configs and model files (equimol.tp.options)
    RENAMED_OPTIONS: ClassVar[dict[str, str]] = {"compile": "compile_edge_product"}

    def __init__(
        self,
        irreps_in1: IrrepsLike,
        irreps_in2: IrrepsLike,
        irreps_out: IrrepsLike,
        *,
        strategy: str = "auto",
        compile_edge_product: bool = False,
        **base_options,
    ) -> None:
        super().__init__(irreps_in1, irreps_in2, irreps_out, **base_options)
        for irreps, name in (
            (self.irreps_in1, "irreps_in1"),
            (self.irreps_in2, "irreps_in2"),
            (self.irreps_out, "irreps_out"),
        ):
            check_natural_parity(self, irreps, name)
        self.layout1, self.layout2, self.layout_out = (
            SlotLayout(irreps) for irreps in (self.irreps_in1, self.irreps_in2, self.irreps_out)
        )
        l1, l2, l3 = self.layout1.lmax, self.layout2.lmax, self.layout_out.lmax
        self.strategy = self._resolve_choice("strategy", strategy, PRODUCT_STRATEGIES, lambda: self.choose(l1, l2, l3))
        if compile_edge_product and self.strategy != "edge":
            raise ValueError(
                f"compile_edge_product=True applies to the 'edge' strategy of backend 'gaunt', not {self.strategy!r} "
                f"(degree {max(l1, l2, l3)}; 'auto' picks 'edge' up to degree {EDGE_MAX_DEGREE})"
            )
        counts = (len(self.irreps_in1), len(self.irreps_in2), len(self.irreps_out))
        self.weight_split = [self.channels * n for n in counts]
        self.weight_numel = sum(self.weight_split)

        scale = []
        for _, ir in self.irreps_out:
            fan_in = gaunt_fan_in(self.layout1.degrees, self.layout2.degrees, ir.l)
            scale.append(math.sqrt(4 * math.pi / fan_in) if fan_in > 0 else 0.0)
        self.register_buffer("output_scale", torch.tensor(scale, dtype=torch.float64))
        self.compiled_edge: CompiledEdge | None = None
        if self.strategy == "grid":
            self._build_grid()
        else:
            self._build_edge(l1, l2, l3, compile_edge_product)
        self._finish_construction()

    @staticmethod
    def choose(lmax1: int, lmax2: int, lmax_out: int) -> str:
        """``"edge"`` up to degree :data:`EDGE_MAX_DEGREE`, above it ``"grid"``.

        Measured (``benchmarks/tp_speed_cpu.json``, 32 channels, 2000 samples, float32, one thread):
        the dense per-sample coupling of ``"edge"`` costs ``d1 d2 d3 n2`` multiply-adds per sample,
        O(L^6), and loses to the O(L^3) grid above L = 3.
        """
        return "edge" if max(lmax1, lmax2, lmax_out) <= EDGE_MAX_DEGREE else "grid"

    def _build_edge(self, l1: int, l2: int, l3: int, compile_edge_product: bool) -> None:
        # Dense coupling, second operand first: K[j, (k, i2, i)] = G[i, j, k] [irrep(j) = i2] * scale(k),
        # so that (x2 @ K) is, per sample, one [d3, n2 * d1] matrix for the w2-weighted copies of a1.
        gaunt = real_gaunt_coefficients(l1, l2, l3)
        index1, index2, index3 = (layout.canonical_index for layout in (self.layout1, self.layout2, self.layout_out))
        coupling = gaunt[index1][:, index2][:, :, index3] * self.output_scale[self.layout_out.irrep_of_component]
        irrep_mask = torch.nn.functional.one_hot(self.layout2.irrep_of_component).T.double()  # [n2, d2]
        stacked = coupling.permute(1, 2, 0)[:, :, None] * irrep_mask.T[:, None, :, None]  # [d2, d3, n2, d1]
        self._register_constant("edge_coupling", stacked.reshape(stacked.shape[0], -1))
        # Component-major [N, D, C] gathers: x1 in, the result out, and all weights expanded per row.
        gather_in1, scatter_out = (component_major_index(irreps) for irreps in (self.irreps_in1, self.irreps_out))
        self._register_index("gather_in1", gather_in1)
        self._register_index("scatter_in1", torch.argsort(gather_in1))
        self._register_index("gather_out", torch.argsort(scatter_out))
        self._register_index("scatter_out", scatter_out)
        counts = (len(self.irreps_in1), len(self.irreps_in2), len(self.irreps_out))
        per_irrep = weight_gather(self.channels, counts)  # weight columns -> [n1 + n2 + n3, C]
        w1, w2, w3 = per_irrep.view(-1, self.channels).split(counts)
        rows = torch.cat([w1[self.layout1.irrep_of_component], w2, w3[self.layout_out.irrep_of_component]])
        self._register_index("gather_weight", rows.flatten())
        # Component rows of each irrep in the component-major layouts of input 1 and the output.
        self.edge_rows = [
            [(part.start, part.stop) for part in o3.Irreps([(1, ir) for _, ir in irreps]).slices()]
            for irreps in (self.irreps_in1, self.irreps_out)
        ]
        if compile_edge_product:
            layouts = (self.layout1, self.layout2, self.layout_out)
            spec = SparseCoupling.from_dense(coupling, tuple(layout.irrep_of_component for layout in layouts))
            self._register_index("compile_gather_weight", per_irrep)
            self._register_index("compile_scatter_weight", torch.argsort(per_irrep))
            self.compiled_edge = CompiledEdge(spec)

    def _build_grid(self) -> None:
        irreps = (self.irreps_in1, self.irreps_in2, self.irreps_out)
        for name, constant in build_grid_constants(*irreps, self.output_scale).items():
            if constant.is_floating_point():
                self._register_constant(f"grid_{name}", constant)
            else:
                self._register_index(f"grid_{name}", constant)

    def _grid_operators(self) -> GridOperators:
        names = [f.name for f in dataclasses.fields(GridOperators) if f.name not in ("slices2", "channels")]
        constants = {name: getattr(self, f"grid_{name}") for name in names}
        return GridOperators(**constants, slices2=list(self.irreps_in2.slices()), channels=self.channels)

    def _register_index(self, name: str, index: torch.Tensor) -> None:
        self.register_buffer(name, index, persistent=False)

    def _register_constant(self, name: str, constant: torch.Tensor) -> None:
        # A private copy of the cached float64 tensor: buffers that alias each other (same degree on
        # both inputs) would share one float64 master and the second would stay rounded after .double().
        self.register_buffer(name, constant.detach().clone())

    def _edge_operators(self) -> EdgeOperators:
        # Built per call (cheap) so that it holds the buffers' current device and dtype.
        return EdgeOperators(
            self.edge_coupling, self.gather_in1, self.scatter_in1, self.gather_weight, self.gather_out,
            self.scatter_out, *self.edge_rows, self.channels, len(self.irreps_in2),
        )  # fmt: skip

    # -- the product -------------------------------------------------------------------------

    def _product(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if x1.shape[0] == 0:
            # Empty batch (e.g. a graph without edges): reshapes cannot take it; keep the graph.
            return x1.new_zeros(0, self.irreps_out.dim) + 0.0 * (x1.sum() + x2.sum() + weight.sum())
        if self.strategy == "edge":
            if self.compiled_edge is not None:
                ops, gather, scatter = self._edge_operators(), self.compile_gather_weight, self.compile_scatter_weight
                return self.compiled_edge(x1, x2, weight, ops, gather, scatter)
            return edge_product(x1, x2, weight, self._edge_operators())
        return grid_product(x1, x2, weight, self._grid_operators())

    def factored_form(self) -> FactoredProduct:
        """Synthesis, pointwise product and projection on one quadrature grid, rank ``G``.

        ``F_in = S1 [D1, G]``, ``F_attr = S2 [D2, G]`` (:func:`~equimol.tp.sphere_grid.dense_grid_matrices`)
        and ``F_out = P`` with the output normalization ``sqrt(4 pi / F)`` folded in; weights per
        (channel, irrep) on both inputs and the output, channel-major, in the order of
        :attr:`weight_split`. Every strategy computes this product to round-off.
        """
        degrees = (tuple(ir.l for _, ir in irreps) for irreps in (self.irreps_in1, self.irreps_in2, self.irreps_out))
        synthesis1, synthesis2, analysis = dense_grid_matrices(*degrees)
        analysis = analysis * self._float64_constants["output_scale"].cpu()[self.layout_out.irrep_of_component]
        irreps = (self.irreps_in1, self.irreps_in2, self.irreps_out)
        split = tuple(WeightGroup(role, len(group)) for role, group in zip(("in", "attr", "out"), irreps))
        return FactoredProduct(*irreps, synthesis1, synthesis2, analysis, weight_split=split)

    def extra_repr(self) -> str:
        compiled = ", compile_edge_product=True" if self.compiled_edge is not None else ""
        return f"{super().extra_repr()}, strategy={self.strategy!r}{compiled}"
