r"""Fused Triton message passing for the ``cp`` backend (CP-decomposed tensor product).

The ``cp`` backend (:class:`equimol.tp.cp.CPTensorProduct`) is parity-exact: with ``u^s = x_s A``
(components of parity ``s``) and ``v^t = y_t B``,

.. math:: z_{e,u,k} = w_{e,u} \sum_r C_{rk} \sum_{s t = p_k} u^{s}_{r}\, v^{t}_{r},

i.e. ``h^+ = u^+ v^+ + u^- v^-`` feeds the even outputs and ``h^- = u^+ v^- + u^- v^+`` the odd ones.
With ``p = u^+ + u^- = x A``, ``q = u^+ - u^- = x (S_1 A)``, ``s = y B``, ``t = y (S_2 B)`` (``S`` the
diagonal of component parities) one has ``h^\pm = (p s \pm q t) / 2``, so

.. math:: z = w \,\big[(xA)(yB)\ \ (xS_1A)(yS_2B)\big] \begin{bmatrix} C/2 \\ C S_3/2 \end{bmatrix}:

one CP product of rank ``2R`` with ``F_in = [A, S_1 A]``, ``F_attr = [B, S_2 B]``,
``F_out = [C/2; C S_3/2]`` and one weight per channel (``w_out``, path-weight sharing): the factored
form of :mod:`equimol.kernels.factored`, one fused kernel for ``m_n = sum_{e: dst(e) = n} z_e``. It
costs twice the projection FLOPs of the torch path's split products and needs no parity sorting.
Outputs that parity forbids come out as ``(ps - qt)/2`` with ``ps = qt`` mathematically: zero up to
round-off (about 1e-16 relative) instead of the torch path's exact zero.

Per-path weights (``weight_sharing=False``, ``weight.view(E, n_paths, C)``): every rank-one term
lies in one path's block (``tp.term_path``) and takes that path's weight, so they enter as the
``w_mid`` weights of the factored form (per edge, channel and term, read through
``rank_map = [term_path, term_path]`` for the two halves of the fold) instead of ``w_out``.
"""

from __future__ import annotations

import torch
from equimol.kernels.autograd import cached_product, fused_message_passing, per_edge_weight
from equimol.kernels.launch import FactoredProduct

from equimol.tp import register_message_kernel


def parity_folded_factors(tp) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[A, S1 A]`` ``[d1, 2R]``, ``[B, S2 B]`` ``[d2, 2R]`` and ``[C/2; C S3/2]`` ``[2R, d3]`` of a cp module.

    ``S`` are the component parities; the backend keeps ``S1 A``, ``S2 B``, ``C/2`` and ``S3`` as buffers.
    """
    factor_in = torch.cat([tp.A, tp.A_signed], dim=1)
    factor_attr = torch.cat([tp.B, tp.B_signed], dim=1)
    factor_out = torch.cat([tp.C_half, tp.C_half * tp.output_signs[None, :]], dim=0)
    return factor_in, factor_attr, factor_out


@register_message_kernel("cp", "triton")
def cp_message_passing(
    tp,
    node_features: torch.Tensor,
    edge_attrs: torch.Tensor,
    edge_weight: torch.Tensor | None,
    edge_src: torch.Tensor,
    edge_dst: torch.Tensor,
    num_nodes: int,
) -> torch.Tensor:
    """``m_n = sum_{e: dst(e) = n} tp(x_{src(e)}, y_e, w_e)`` for a ``cp`` tensor product, fused.

    Args:
        tp: a ``CPTensorProduct`` (shared or per-path weights).
        node_features: ``[num_senders, irreps_in1.dim]``; edge_attrs: ``[E, irreps_in2.dim]``.
        edge_weight: ``[E, weight_numel]``, ``[weight_numel]`` or None (internal weights).
        edge_src, edge_dst: ``[E]`` int64; num_nodes: rows of the result.

    Returns:
        ``[num_nodes, irreps_out.dim]``, equal to the torch path up to summation order.
    """
    edges, channels = edge_src.shape[0], tp.channels
    for name, tensor in (("node_features", node_features), ("edge_attrs", edge_attrs)):
        if tensor.dtype != tp.A.dtype:
            raise ValueError(f"{name} is {tensor.dtype} but the cp tensor product is {tp.A.dtype}; cast one")
    weight = per_edge_weight(tp, edge_weight, edges)
    if weight.dtype != tp.A.dtype:
        raise ValueError(f"edge_weight is {weight.dtype} but the {tp.name} tensor product is {tp.A.dtype}; cast one")
    shared = getattr(tp, "weight_sharing", True)
    # per-path weights: every rank-one term (in both halves of the parity fold) reads its path's weight
    rank_map = None if shared else torch.cat([tp.term_path, tp.term_path])
    product = cached_product(
        tp,
        (tp.A, tp.A_signed, tp.B, tp.B_signed, tp.C_half, tp.output_signs, tp.term_path),
        lambda: FactoredProduct(
            tp.irreps_in1, tp.irreps_in2, tp.irreps_out, *parity_folded_factors(tp), rank_map=rank_map
        ),
    )
    if shared:
        w_out, w_mid = weight.reshape(edges, channels, 1), None
    else:
        w_out, w_mid = None, weight.view(edges, -1, channels).transpose(1, 2)  # [E, C, n_paths]

    def reference(features, attrs, _w_in, _w_attr, w_out, w_mid):
        flat = w_out.reshape(edges, channels) if shared else w_mid.transpose(1, 2).reshape(edges, -1)
        return tp.reference_message_passing(features, attrs, flat, edge_src, edge_dst, num_nodes)

    return fused_message_passing(
        product,
        node_features,
        edge_attrs,
        None,
        None,
        w_out,
        edge_src,
        edge_dst,
        num_nodes,
        tp.deterministic,
        reference,
        w_mid=w_mid,
    )
