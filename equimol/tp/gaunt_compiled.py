r"""The ``edge`` strategy of the Gaunt product compiled by ``torch.compile`` (backend option ``compile_edge_product``).

The Gaunt coupling of small degrees is sparse: with ``C x (0e + ... + Le)`` on both sides it has
10, 83 and 353 nonzero entries ``G[k1, k2, k3]`` at ``L = 1, 2, 3`` out of ``(L + 1)^6``. Written
entry by entry on ``[N, C]`` component slices, the product of :mod:`equimol.tp.gaunt_edge`

.. math::

    a_{k_1} = x_{k_1} w_{1, i(k_1)}, \quad b_{k_2} = y_{k_2} w_{2, i(k_2)}, \quad
    s_{k_3} = \sum_{(k_1, k_2, k_3) \in \mathcal{E}} G_{k_1 k_2 k_3}\, a_{k_1} b_{k_2}, \quad
    z_{k_3} = s_{k_3} w_{3, i(k_3)}

is a few hundred elementwise operations, which Inductor fuses into a handful of loops over
``(n, c)`` that read every input once and write every output once. Eager PyTorch cannot do that
(one kernel launch and one pass over memory per operation), which is why the eager ``edge``
strategy batches a dense ``[d3, n2 d1]`` matrix per sample instead.

The backward is written out the same way and compiled separately (so no graph of the backward is
built, and the forward graph is an inference graph):

.. math::

    \bar s = \bar z\, w_3, \quad \bar w_3 = \textstyle\sum_{k_3 \in i_3} \bar z\, s, \quad
    \bar a_{k_1} = \sum G\, \bar s_{k_3} b_{k_2}, \quad \bar b_{k_2} = \sum G\, \bar s_{k_3} a_{k_1},

then ``bar x = w1 bar a``, ``bar w1 = sum x bar a``, ``bar y = sum_c w2 bar b`` and
``bar w2 = sum y bar b``. When a graph of the backward is requested (``create_graph=True``, forces
in training) the eager differentiable backward of :mod:`~equimol.tp.gaunt_edge` runs instead, so
higher derivatives stay exact.

**Fallback.** Compilation happens on the first call per dtype and device (Inductor caches the code on
disk for later processes). If it fails (no C++ compiler, an
unsupported platform), one RuntimeWarning names the error and this module computes with the eager
``edge`` strategy from then on. Under a tracer (``torch.export``, ``make_fx``, an outer
``torch.compile``) the eager ``edge`` strategy is traced instead.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from equimol.tp.gaunt_edge import EdgeOperators, edge_product, edge_vjp
from equimol.utils.tracing import tracing

#: Most nonzero coupling entries ``compile_edge_product=True`` accepts (353 at L = 3 on all operands, 1158 at
#: L = 4): the graph is unrolled per entry, so its compilation time grows with the entries.
COMPILE_MAX_ENTRIES = 400


@dataclass(frozen=True)
class SparseCoupling:
    """The nonzero Gaunt entries of one product (plain Python numbers, baked into the compiled graph).

    Attributes:
        entries: ``(k1, k2, k3, value)``, component indices in the irreps order of each operand, the
            output scale folded into ``value``.
        irrep1, irrep2, irrep3: irrep position of every component of input 1, input 2, the output.
        counts: ``(n1, n2, n3)``, the irreps of each operand.
    """

    entries: tuple[tuple[int, int, int, float], ...]
    irrep1: tuple[int, ...]
    irrep2: tuple[int, ...]
    irrep3: tuple[int, ...]
    counts: tuple[int, int, int]

    @classmethod
    def from_dense(cls, coupling: torch.Tensor, irreps_of_components: tuple[torch.Tensor, ...]) -> SparseCoupling:
        """From the dense float64 coupling ``[d1, d2, d3]``; ValueError above :data:`COMPILE_MAX_ENTRIES`."""
        nonzero = (coupling.abs() > 1e-14).nonzero().tolist()
        if len(nonzero) > COMPILE_MAX_ENTRIES:
            raise ValueError(
                "compile_edge_product=True unrolls the Gaunt coupling entry by entry, and this product has "
                f"{len(nonzero)} "
                f"nonzero entries (limit {COMPILE_MAX_ENTRIES}); use the 'grid' strategy without compile_edge_product"
            )
        entries = tuple((k1, k2, k3, float(coupling[k1, k2, k3])) for k1, k2, k3 in nonzero)
        irreps = tuple(tuple(int(i) for i in part.tolist()) for part in irreps_of_components)
        counts = tuple(max(part) + 1 for part in irreps)
        return cls(entries, *irreps, counts)


def weight_gather(channels: int, counts: tuple[int, int, int]) -> torch.Tensor:
    """Weight columns (``cat(w1 [C, n1], w2 [C, n2], w3 [C, n3])``, flattened) as ``[n1 + n2 + n3, C]``, flat."""
    parts, start = [], 0
    for n in counts:
        parts.append(start + torch.arange(channels * n).view(channels, n).T)
        start += channels * n
    return torch.cat(parts).flatten()


def _operands(spec: SparseCoupling, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor):
    """Component slices ``[N, C]`` of the component-major inputs, and ``a``, ``b`` of the module docstring."""
    n1, n2, _ = spec.counts
    xs, ys, ws = x.unbind(1), y.unbind(1), w.unbind(1)
    a = [xs[k] * ws[i] for k, i in enumerate(spec.irrep1)]
    b = [ys[k].unsqueeze(1) * ws[n1 + i] for k, i in enumerate(spec.irrep2)]
    return xs, ys, ws, a, b


def _sum_terms(terms: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    if not terms:
        return torch.zeros_like(like)
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def sparse_forward(spec: SparseCoupling, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor):
    """``(z, s)`` ``[N, d3, C]``: the product and its unscaled sums (kept for the backward).

    ``x [N, d1, C]`` (component-major input 1), ``y [N, d2]``, ``w [N, n1 + n2 + n3, C]`` (per-irrep weights).
    """
    n1, n2, _ = spec.counts
    _, _, ws, a, b = _operands(spec, x, y, w)
    terms: list[list[torch.Tensor]] = [[] for _ in spec.irrep3]
    for k1, k2, k3, value in spec.entries:
        terms[k3].append(a[k1] * b[k2] * value)
    sums = [_sum_terms(group, a[0]) for group in terms]
    scaled = [total * ws[n1 + n2 + i] for total, i in zip(sums, spec.irrep3)]
    return torch.stack(scaled, dim=1), torch.stack(sums, dim=1)


def sparse_backward(spec: SparseCoupling, x, y, w, sums, grad):
    """Gradients ``(x [N, d1, C], y [N, d2], w [N, n1 + n2 + n3, C])`` for ``grad [N, d3, C]``."""
    n1, n2, n3 = spec.counts
    xs, ys, ws, a, b = _operands(spec, x, y, w)
    grad_z, s = grad.unbind(1), sums.unbind(1)
    grad_s = [g * ws[n1 + n2 + i] for g, i in zip(grad_z, spec.irrep3)]
    terms_a: list[list[torch.Tensor]] = [[] for _ in a]
    terms_b: list[list[torch.Tensor]] = [[] for _ in b]
    for k1, k2, k3, value in spec.entries:
        weighted = grad_s[k3] * value
        terms_a[k1].append(weighted * b[k2])
        terms_b[k2].append(weighted * a[k1])
    grad_a = [_sum_terms(group, a[0]) for group in terms_a]
    grad_b = [_sum_terms(group, a[0]) for group in terms_b]
    grad_x = torch.stack([g * ws[i] for g, i in zip(grad_a, spec.irrep1)], dim=1)
    grad_y = torch.stack([(g * ws[n1 + i]).sum(1) for g, i in zip(grad_b, spec.irrep2)], dim=1)
    groups: list[list[torch.Tensor]] = [[] for _ in range(n1 + n2 + n3)]
    for g, v, i in zip(grad_a, xs, spec.irrep1):
        groups[i].append(g * v)
    for k, (g, i) in enumerate(zip(grad_b, spec.irrep2)):
        groups[n1 + i].append(g * ys[k].unsqueeze(1))
    for g, v, i in zip(grad_z, s, spec.irrep3):
        groups[n1 + n2 + i].append(g * v)
    grad_w = torch.stack([_sum_terms(group, a[0]) for group in groups], dim=1)
    return grad_x, grad_y, grad_w


class CompiledEdge:
    """The compiled forward and backward of one product, built lazily, with the eager fallback.

    Not a module and not part of the state: copies and pickles drop the compiled functions (they
    are rebuilt on the next call), so models holding one deep-copy and save as usual.
    """

    def __init__(self, spec: SparseCoupling) -> None:
        self.spec = spec
        self.failed: str | None = None
        self._functions = None

    def __getstate__(self) -> dict:
        return {"spec": self.spec, "failed": self.failed}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["spec"])
        self.failed = state["failed"]

    def functions(self):
        """``(forward, backward)``, compiled with a dynamic sample count on first use."""
        if self._functions is None:
            spec = self.spec
            options = {"dynamic": True, "fullgraph": True}
            self._functions = (
                torch.compile(lambda x, y, w: sparse_forward(spec, x, y, w), **options),
                torch.compile(lambda x, y, w, s, g: sparse_backward(spec, x, y, w, s, g), **options),
            )
        return self._functions

    def run(self, which: int, *args: torch.Tensor):
        # Floats are graph inputs by default under dynamic shapes; the coupling values must be literals.
        with torch._dynamo.config.patch(specialize_float=True):
            return self.functions()[which](*args)

    def fall_back(self, error: Exception) -> None:
        """Record a compilation failure and warn once; later calls use the eager ``edge`` product."""
        cause = getattr(error, "inner_exception", None) or error  # BackendCompilerFailed wraps the cause
        self.failed = f"{type(cause).__name__}: {cause}".strip().splitlines()[0]
        warnings.warn(
            f"gaunt compile=True: torch.compile failed ({self.failed}); using the eager 'edge' strategy",
            RuntimeWarning,
            stacklevel=3,
        )

    def __call__(self, x1, x2, weight, ops: EdgeOperators, gather_weight, scatter_weight) -> torch.Tensor:
        """The product ``[N, D_out]`` of ``x1 [N, D1]``, ``x2 [N, D2]`` and ``weight [N, W]`` (mul_ir layouts).

        ``gather_weight`` is :func:`weight_gather` on the module's device, ``scatter_weight`` its inverse.
        """
        if self.failed is None and not tracing():
            try:
                return CompiledEdgeProduct.apply(x1, x2, weight, self, ops, gather_weight, scatter_weight)
            except Exception as error:  # noqa: BLE001 - any compiler failure must fall back, not stop a run
                self.fall_back(error)
        return edge_product(x1, x2, weight, ops)


class CompiledEdgeProduct(torch.autograd.Function):
    """``apply(x1, x2, weight, compiled, ops, gather_weight, scatter_weight) -> [N, D_out]``."""

    @staticmethod
    def forward(ctx, x1, x2, weight, compiled: CompiledEdge, ops: EdgeOperators, gather_weight, scatter_weight):
        count, channels = x1.shape[0], ops.channels
        x = x1.index_select(1, ops.gather_in1).view(count, -1, channels)
        w = weight.index_select(1, gather_weight).view(count, -1, channels)
        z, sums = compiled.run(0, x, x2, w)
        ctx.compiled, ctx.ops, ctx.scatter_weight = compiled, ops, scatter_weight
        ctx.save_for_backward(x1, x2, weight, x, w, sums)
        return z.view(count, -1).index_select(1, ops.gather_out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x1, x2, weight, x, w, sums = ctx.saved_tensors
        compiled, ops = ctx.compiled, ctx.ops
        if not torch.is_grad_enabled() and compiled.failed is None:
            count = x1.shape[0]
            grad_z = grad.index_select(1, ops.scatter_out).view(count, -1, ops.channels)
            try:
                grad_x, grad_y, grad_w = compiled.run(1, x, x2, w, sums, grad_z)
            except Exception as error:  # noqa: BLE001 - see CompiledEdge.__call__
                compiled.fall_back(error)
            else:
                grad_x1 = grad_x.view(count, -1).index_select(1, ops.scatter_in1)
                grad_weight = grad_w.view(count, -1).index_select(1, ctx.scatter_weight)
                return grad_x1, grad_y, grad_weight, None, None, None, None
        grads = edge_vjp(x1, x2, weight, grad, ops, ctx.needs_input_grad[:3])
        return (*grads, None, None, None, None)
