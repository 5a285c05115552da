r"""The stacked Clebsch-Gordan coupling tensor of the ``cp`` backend, its parity mask and the fitted factors.

**The coupling tensor.** ``M[i, j, k]`` maps one channel of ``irreps_in1`` (``i`` over the
``d1 = sum (2 l1 + 1)`` channel-major components, :func:`equimol.tp.irreps.to_channel_major`) and
``irreps_in2`` (``j``, ``d2`` components) to one channel of ``irreps_out`` (``k``, ``d3``):

.. math:: z_k = \sum_{ij} M_{ijk}\, x_i\, y_j ,

summed over every parity-allowed path with unit weight and exactly the ``cg`` backend's
normalization (``sqrt(2 l3 + 1) / sqrt(fan_in)`` times e3nn's 3j symbols). It is obtained by
evaluating the ``cg`` backend (one channel, float64, all weights one) on basis vectors.

**Parity-coupled CP.** With component parities ``p1, p2, p3`` (``+1`` for ``e``, ``-1`` for ``o``)
``M`` vanishes unless ``p1_i p2_j p3_k = 1``. The fitted tensor keeps these zeros exactly:

.. math:: \tilde M_{ijk} = \Pi_{ijk} \sum_{r=1}^{R} A_{ir} B_{jr} C_{rk},
          \qquad \Pi_{ijk} = [p1_i\, p2_j\, p3_k = 1],

which is what the ``cp`` forward evaluates (it multiplies parity-split projections, so forbidden
outputs are exact zeros, not small numbers). The factors are fitted by :mod:`equimol.tp.cp_fit`
and cached by :mod:`equimol.tp.cp_cache`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from e3nn import o3

NORMALIZATION = "irrep=component,path=element"


@dataclass
class CPFactors:
    """Fitted factors: ``A [d1, R]``, ``B [d2, R]``, ``C [R, d3]`` (float64) and the fit report.

    ``term_path[r]`` is the path whose weight scales term ``r`` (all zero with weight sharing).
    ``relative_error`` is ``||M - \\tilde M||_F / ||M||_F`` of the parity-masked reconstruction.
    """

    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    term_path: torch.Tensor
    relative_error: float
    exact: bool
    iterations: int
    fit_seconds: float

    @property
    def rank(self) -> int:
        return self.A.shape[1]


def single_channel(irreps: o3.Irreps) -> o3.Irreps:
    """``irreps`` with every multiplicity set to one (the per-channel layout)."""
    return o3.Irreps([(1, ir) for _, ir in irreps])


def coupling_tensor(irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps) -> torch.Tensor:
    """The stacked CG tensor ``M [d1, d2, d3]`` (float64) of the ``cg`` backend with unit weights.

    Multiplicities are ignored (one channel). ``M`` is read off the ``cg`` backend applied to all
    pairs of basis vectors, so its normalization is the ``cg`` backend's by construction.
    """
    from equimol.tp.interface import TensorProduct

    tp = TensorProduct(
        single_channel(irreps_in1),
        single_channel(irreps_in2),
        single_channel(irreps_out),
        backend="cg",
        internal_weights=False,
        dtype=torch.float64,
    )
    d1, d2, d3 = tp.irreps_in1.dim, tp.irreps_in2.dim, tp.irreps_out.dim
    x1 = torch.eye(d1, dtype=torch.float64).repeat_interleave(d2, dim=0)
    x2 = torch.eye(d2, dtype=torch.float64).repeat(d1, 1)
    weight = torch.ones(d1 * d2, tp.weight_numel, dtype=torch.float64)
    with torch.no_grad():
        return tp(x1, x2, weight).reshape(d1, d2, d3)


def component_parities(irreps: o3.Irreps) -> torch.Tensor:
    """``[sum (2l+1)]`` int64 parity (+1 / -1) of each per-channel component of ``irreps``."""
    return torch.tensor([ir.p for _, ir in irreps for _ in range(ir.dim)], dtype=torch.int64)


def parity_mask(p1: torch.Tensor, p2: torch.Tensor, p3: torch.Tensor) -> torch.Tensor:
    """``Pi [d1, d2, d3]`` float64: one where ``p1_i p2_j p3_k = 1`` (parity allows the entry)."""
    return (p1[:, None, None] * p2[None, :, None] * p3[None, None, :] == 1).to(torch.float64)


def reconstruct(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``Pi * sum_r A[:, r] x B[:, r] x C[r, :]``, ``[d1, d2, d3]``."""
    return torch.einsum("ir,jr,rk->ijk", A, B, C) * mask


def relative_error(M: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, mask: torch.Tensor) -> float:
    """``||M - Pi [[A, B, C]]||_F / ||M||_F``."""
    return ((reconstruct(A, B, C, mask) - M).norm() / M.norm()).item()


def max_degree(*irreps: o3.Irreps) -> int:
    """Largest ``l`` over the given irreps (the ``L`` of the ``7 L^2`` default rank)."""
    return max(ir.l for group in irreps for _, ir in group)


def path_blocks(paths, irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps):
    """Index sets ``(rows1, rows2, rows3)`` of each path's block of ``M``, in ``paths`` order."""
    from equimol.tp.irreps import degree_offsets

    offsets = [degree_offsets(irreps) for irreps in (irreps_in1, irreps_in2, irreps_out)]
    return [tuple(torch.arange(*offsets[n][index]) for n, index in enumerate((p.i1, p.i2, p.i_out))) for p in paths]
