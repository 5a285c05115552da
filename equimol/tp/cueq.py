r"""Backend ``cueq``: the ``cg`` product evaluated by NVIDIA cuEquivariance (optional dependency).

The same channel-wise product, paths and normalization as :mod:`equimol.tp.cg`,

.. math::

    z^{(l_3)}_{n,u,m_3} = \sum_{(l_1, l_2) \to l_3} \frac{w_{n,p,u}}{\sqrt{F_{l_3}}}
        \sum_{m_1 m_2} \tilde C^{l_1 l_2 l_3}_{m_1 m_2 m_3}\, x^{(l_1)}_{n,u,m_1}\, y^{(l_2)}_{n,m_2},

written as one cuEquivariance segmented tensor product with subscripts ``u,iu,j,ku+ijk``
(weights, ``x1``, ``x2``, output). ``\tilde C = cue.clebsch_gordan(ir1, ir2, ir3)`` equals
``sqrt(2 l3 + 1)`` times e3nn's unit-norm Wigner 3j (component normalization), and
``normalize_paths_for_operand(-1)`` divides by ``sqrt(F_l3)``, the number of paths into ``l3``
(e3nn's ``path_normalization="element"``). ``tests/test_tp_cueq.py`` checks the result against
``cg`` to 1e-10 in float64.

**Weight mapping.** equimol's per-sample weights are ``weight.view(N, n_paths, C)`` with paths in
:attr:`paths` order, exactly as for ``cg``. The descriptor's weight operand has one segment of ``C``
numbers per path, added in the same order, so a ``cg`` weight tensor is a ``cueq`` weight tensor
(identity map; a ``cg`` checkpoint loads into ``cueq``). cuEquivariance's own
``cuet.ChannelWiseTensorProduct`` orders its paths by ``(i1, i2, ir3)`` and keeps one output block
per path; :func:`channelwise_path_order` gives the permutation between the two, and summing that
layer's per-path blocks over each output irrep and dividing by ``sqrt(F_l3)`` reproduces this backend.

**Layout.** cuEquivariance's kernels want ``ir_mul`` blocks (``[2l+1, C]``); equimol features are
``mul_ir`` (e3nn). ``x1`` and the output are permuted by one ``index_select`` each.

**Method.** ``method="auto"`` runs cuEquivariance's CUDA kernel (``uniform_1d``) when
``cuequivariance_ops_torch`` is importable and CUDA is available, and its PyTorch implementation
(``naive``) otherwise. The method is chosen explicitly, so cuEquivariance's warning that the ops
package is absent never fires. cuEquivariance's internal constants are kept out of the state dict,
so a checkpoint does not depend on the method (train on a CPU, run on a GPU).

In :meth:`~equimol.tp.interface.TensorProductBackend.message_passing` the gather (``x1[edge_src]``)
and the scatter-sum (into ``edge_dst``) go to cuEquivariance as input and output indices
(:meth:`CueqTensorProduct._sum_in_layout`), which its CUDA kernel fuses.
"""

from __future__ import annotations

import importlib.util

import cuequivariance as cue
import cuequivariance_torch as cuet
import torch
from e3nn import o3
from torch import Tensor

from equimol.tp.interface import TensorProductBackend, register_backend
from equimol.tp.irreps import IrrepsLike, component_major_index
from equimol.tp.paths import Path

METHODS = ("auto", "naive", "uniform_1d", "fused_tp")


def _cue_irrep(ir: o3.Irrep) -> cue.O3:
    return cue.O3(ir.l, ir.p)


def channelwise_descriptor(
    irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps, paths: list[Path]
) -> cue.SegmentedTensorProduct:
    """The ``u,iu,j,ku+ijk`` descriptor of the uvu product over ``paths`` (in that order).

    Operand 0: one weight segment ``[C]`` per path. Operands 1 and 3: one ``[2l+1, C]`` segment
    per irrep of ``irreps_in1`` / ``irreps_out`` (``ir_mul``). Operand 2: one ``[2l+1]`` segment
    per irrep of ``irreps_in2``.
    """
    channels = irreps_in1[0].mul
    descriptor = cue.SegmentedTensorProduct.from_subscripts("u,iu,j,ku+ijk")
    for _, ir in irreps_in1:
        descriptor.add_segment(1, (ir.dim, channels))
    for _, ir in irreps_in2:
        descriptor.add_segment(2, (ir.dim,))
    for _, ir in irreps_out:
        descriptor.add_segment(3, (ir.dim, channels))
    for path in paths:
        irreps = (irreps_in1[path.i1].ir, irreps_in2[path.i2].ir, irreps_out[path.i_out].ir)
        (coupling,) = cue.clebsch_gordan(*(_cue_irrep(ir) for ir in irreps))
        descriptor.add_path(None, path.i1, path.i2, path.i_out, c=coupling, dims={"u": channels})
    return descriptor.normalize_paths_for_operand(-1)


def channelwise_path_order(irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps) -> list[int]:
    """For each weight segment of ``cuet.ChannelWiseTensorProduct(irreps_in1, irreps_in2,
    filter_irreps_out=irreps_out)``, the index of the same path in equimol's :attr:`paths` order.

    ``weight_cuet.view(N, P, C) == weight_equimol.view(N, P, C)[:, order]``. cuEquivariance creates
    its paths in ``(i1, i2, ir3)`` order and then sorts them (weights with them) by output irrep;
    the order is read from its own descriptor. Needs each irrep at most once in ``irreps_out``.
    """
    from equimol.tp.paths import allowed_paths

    to_cue = [cue.O3(ir.l, ir.p) for _, ir in irreps_out]
    polynomial = cue.descriptors.channelwise_tensor_product(
        cue.Irreps(cue.O3, str(irreps_in1)), cue.Irreps(cue.O3, str(irreps_in2)), to_cue
    )
    descriptor = polynomial.polynomial.operations[0][1]
    outputs = list(polynomial.outputs[0].irreps)
    index = {
        (p.i1, p.i2, irreps_out[p.i_out].ir): k for k, p in enumerate(allowed_paths(irreps_in1, irreps_in2, irreps_out))
    }
    order = [-1] * descriptor.operands[0].num_segments
    for path in descriptor.paths:
        segment, i1, i2, i_out = path.indices
        ir3 = outputs[i_out].ir
        order[segment] = index[(i1, i2, o3.Irrep(ir3.l, ir3.p))]
    return order


def _broadcast_rows(weight: torch.Tensor) -> torch.Tensor:
    """Shared weights expanded by ``_check_inputs`` go back to one row; cuEquivariance broadcasts it."""
    return weight[:1] if weight.shape[0] > 1 and weight.stride(0) == 0 else weight


def _auto_method() -> str:
    has_ops = importlib.util.find_spec("cuequivariance_ops_torch") is not None
    return "uniform_1d" if has_ops and torch.cuda.is_available() else "naive"


@register_backend("cueq")
class CueqTensorProduct(TensorProductBackend):
    """The ``cg`` product through a cuEquivariance segmented polynomial.

    Args:
        irreps_in1, irreps_in2, irreps_out: see :func:`equimol.tp.TensorProduct`.
        method: cuEquivariance implementation, one of :data:`METHODS` (default ``"auto"``, see the
            module docstring).
        **base_options: ``internal_weights``, ``dtype``, ``device``, ``kernel``, ``deterministic``
            (see :class:`~equimol.tp.interface.TensorProductBackend`).
    """

    def __init__(
        self,
        irreps_in1: IrrepsLike,
        irreps_in2: IrrepsLike,
        irreps_out: IrrepsLike,
        *,
        method: str = "auto",
        **base_options,
    ) -> None:
        super().__init__(irreps_in1, irreps_in2, irreps_out, **base_options)
        self.method = self._resolve_choice("method", method, METHODS, _auto_method)
        descriptor = channelwise_descriptor(self.irreps_in1, self.irreps_in2, self.irreps_out, self.paths)
        self.descriptor = descriptor
        self.polynomial = cuet.SegmentedPolynomial(
            cue.SegmentedPolynomial.eval_last_operand(descriptor), method=self.method, name="equimol_cueq"
        )
        # Keep cuEquivariance's coefficient copies out of checkpoints: they are rebuilt on
        # construction and differ between methods (naive on a CPU, uniform_1d on a GPU).
        for module in self.polynomial.modules():
            module._non_persistent_buffers_set.update(module._buffers.keys())
        # e3nn's mul_ir layout to cuEquivariance's ir_mul and back (equimol.tp.irreps: component-major)
        self.register_buffer("in1_to_ir_mul", component_major_index(self.irreps_in1), persistent=False)
        self.register_buffer("out_to_mul_ir", component_major_index(self.irreps_out).argsort(), persistent=False)
        self.weight_numel = descriptor.operands[0].size
        self._finish_construction()

    def product_layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """cuEquivariance computes on ``ir_mul`` (component-major) features."""
        return self.in1_to_ir_mul, self.out_to_mul_ir

    def _product_in_layout(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        (out,) = self.polynomial([_broadcast_rows(weight), x1, x2], {}, {}, {})
        return out

    def _sum_in_layout(
        self, nodes: Tensor, attrs: Tensor, weight: Tensor, src: Tensor, dst: Tensor, count: int
    ) -> Tensor:
        """cuEquivariance's indexed gather (``src``) and scatter-sum (``dst``), fused by its CUDA kernel.

        No Triton kernel serves this backend (it has no factored form): this is its message passing.
        """
        (out,) = self.polynomial(
            [_broadcast_rows(weight), nodes, attrs], {1: src}, {0: nodes.new_empty(count, 1)}, {0: dst}
        )
        return out
