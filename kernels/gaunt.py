r"""Fused Triton message passing for the ``gaunt`` backend (sphere-grid form).

The Gaunt product (:class:`equimol.tp.gaunt.GauntTensorProduct`) evaluates both inputs on a
grid of ``G`` points of the sphere, multiplies pointwise and projects back. Every step is linear
in its input, so with the dense matrices

.. math::

    S^{(1)}_{i g} = Y_i(s_g), \quad S^{(2)}_{j g} = Y_j(s_g), \quad
    P_{g k} = q_g\, Y_k(s_g) \sqrt{4\pi / F_{l(k)}}

(orthonormal real harmonics ``Y``, quadrature points ``s_g`` and weights ``q_g``, ``F`` the output fan-in)
the product of one channel is ``z_k = w3[deg k] sum_g P_gk (sum_i x_i w1[deg i] S1_ig)(sum_j y_j
w2[deg j] S2_jg)``: the factored form of :mod:`equimol.kernels.factored` with rank ``R = G`` and
weights per (channel, irrep) on both inputs and the output (``weight_numel = C (n1 + n2 + n_out)``).

The matrices are built here from the definition (orthonormal harmonics on a Gauss-Legendre x
uniform grid that integrates ``f_1 f_2 Y_{l_3}`` exactly, ``G = (L_tot // 2 + 1)(L_tot + 1)`` points for
``L_tot = l1_max + l2_max + l3_max``), not read off the module's internals; they reproduce either
strategy of the torch path to round-off (both are exact quadratures of the same integral). Dense
synthesis costs ``O(D G)`` per channel, ``O(L^4)``, against the separable ``O(L^3)`` of the torch path;
at the degrees of MLIPs (``L <= 4``) the fused kernel avoids writing the ``[E, C, G]`` intermediates.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from e3nn import o3
from equimol.kernels.autograd import cached_product, fused_message_passing, per_edge_weight
from equimol.kernels.launch import FactoredProduct

from equimol.tp import register_message_kernel
from equimol.tp.gaunt import gaunt_fan_in


def quadrature(total_degree: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``[G, 3]`` and weights ``[G]`` integrating every polynomial of degree ``<= total_degree`` exactly.

    Gauss-Legendre in ``cos(theta)`` (``n`` nodes are exact to degree ``2n - 1``) times ``total_degree + 1``
    uniform azimuths (exact for frequencies ``<= total_degree``); weights sum to ``4 pi``. float64.
    """
    n_theta = total_degree // 2 + 1
    n_phi = total_degree + 1
    cos_theta, gauss_weights = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(n_theta))
    phi = torch.arange(n_phi, dtype=torch.float64) * (2 * math.pi / n_phi)
    sin_theta = (1 - cos_theta**2).sqrt()
    points = torch.stack(
        [
            (sin_theta[:, None] * phi.cos()[None, :]),
            (sin_theta[:, None] * phi.sin()[None, :]),
            cos_theta[:, None].expand(-1, n_phi),
        ],
        dim=-1,
    ).reshape(-1, 3)
    weights = (gauss_weights[:, None] * (2 * math.pi / n_phi)).expand(-1, n_phi).reshape(-1)
    return points, weights


def _harmonics(irreps: o3.Irreps, points: torch.Tensor) -> torch.Tensor:
    """Orthonormal real harmonics of every (one-channel) component of ``irreps`` at ``points``: ``[D, G]``."""
    # e3nn evaluates the harmonics in the dtype of ``points`` (float64 here), whatever torch's default dtype
    blocks = [o3.spherical_harmonics(ir.l, points, normalize=True, normalization="integral") for _, ir in irreps]
    return torch.cat(blocks, dim=-1).T


@functools.lru_cache(maxsize=64)
def _grid_factors_float64(irreps_in1: str, irreps_in2: str, irreps_out: str):
    irreps = [o3.Irreps(s) for s in (irreps_in1, irreps_in2, irreps_out)]
    degrees = [[ir.l for _, ir in group] for group in irreps]
    points, weights = quadrature(sum(max(d) for d in degrees))
    synthesis1, synthesis2, harmonics_out = (_harmonics(group, points) for group in irreps)
    scale = []
    for _, ir in irreps[2]:
        fan_in = gaunt_fan_in(degrees[0], degrees[1], ir.l)
        scale.extend([math.sqrt(4 * math.pi / fan_in) if fan_in > 0 else 0.0] * ir.dim)
    projection = (weights[:, None] * harmonics_out.T) * torch.tensor(scale, dtype=torch.float64)[None, :]
    return synthesis1, synthesis2, projection


def grid_factors(tp) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``S1 [d1, G]``, ``S2 [d2, G]`` and ``P [G, d_out]`` of a gaunt module, in its dtype and device.

    ``S`` hold the orthonormal harmonics at the quadrature points, ``P`` the quadrature weights times the
    output harmonics times the output normalization ``sqrt(4 pi / F_l3)``
    (:func:`equimol.tp.gaunt.gaunt_fan_in`). Built in float64 and cached, then cast.
    """
    factors = _grid_factors_float64(str(tp.irreps_in1), str(tp.irreps_in2), str(tp.irreps_out))
    reference = tp.output_scale
    return tuple(f.to(dtype=reference.dtype, device=reference.device) for f in factors)


@register_message_kernel("gaunt", "triton")
def gaunt_message_passing(
    tp,
    node_features: torch.Tensor,
    edge_attrs: torch.Tensor,
    edge_weight: torch.Tensor | None,
    edge_src: torch.Tensor,
    edge_dst: torch.Tensor,
    num_nodes: int,
) -> torch.Tensor:
    """``m_n = sum_{e: dst(e) = n} tp(x_{src(e)}, y_e, w_e)`` for a ``gaunt`` tensor product, fused.

    Args:
        tp: a ``GauntTensorProduct`` (either strategy; ``grid`` is the efficient one).
        node_features: ``[num_senders, irreps_in1.dim]``; edge_attrs: ``[E, irreps_in2.dim]``.
        edge_weight: ``[E, C (n1 + n2 + n_out)]``, the shared ``[weight_numel]`` or None (internal).
        edge_src, edge_dst: ``[E]`` int64; num_nodes: rows of the result.

    Returns:
        ``[num_nodes, irreps_out.dim]``, equal to the torch path up to summation order.
    """
    dtype = tp.output_scale.dtype
    for name, tensor in (("node_features", node_features), ("edge_attrs", edge_attrs)):
        if tensor.dtype != dtype:
            raise ValueError(f"{name} is {tensor.dtype} but the gaunt tensor product is {dtype}; cast one")
    edges, channels = edge_src.shape[0], tp.channels
    weight = per_edge_weight(tp, edge_weight, edges)
    if weight.dtype != dtype:
        raise ValueError(f"edge_weight is {weight.dtype} but the {tp.name} tensor product is {dtype}; cast one")
    w_in, w_attr, w_out = (w.reshape(edges, channels, -1) for w in torch.split(weight, tp.weight_split, dim=1))
    product = cached_product(
        tp, (tp.output_scale,), lambda: FactoredProduct(tp.irreps_in1, tp.irreps_in2, tp.irreps_out, *grid_factors(tp))
    )

    def reference(features, attrs, w1, w2, w3, _w_mid):
        flat = torch.cat([w1.flatten(1), w2.flatten(1), w3.flatten(1)], dim=1)
        return tp.reference_message_passing(features, attrs, flat, edge_src, edge_dst, num_nodes)

    return fused_message_passing(
        product,
        node_features,
        edge_attrs,
        w_in,
        w_attr,
        w_out,
        edge_src,
        edge_dst,
        num_nodes,
        tp.deterministic,
        reference,
    )
