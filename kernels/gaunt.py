r"""Fused Triton message passing for the ``gaunt`` backend (sphere-grid form).

The Gaunt product (:class:`equimol.tp.gaunt.GauntTensorProduct`) evaluates both inputs on a
grid of ``G`` points of the sphere, multiplies pointwise and projects back. Every step is linear
in its input, so with the dense matrices

.. math::

    S^{(1)}_{i g} = f_1\text{-sample at } g \text{ of the basis vector } e_i, \quad
    S^{(2)}_{j g} = \text{same for } x_2, \quad
    P_{g k} = \sqrt{4\pi / F_{i(k)}}\ \text{(projection of } e_g \text{ onto output component } k)

the product of one channel is ``z_k = w3[deg k] sum_g P_gk (sum_i x_i w1[deg i] S1_ig)(sum_j y_j
w2[deg j] S2_jg)``: the factored form of :mod:`equimol.kernels.factored` with rank ``R = G`` and
weights per (channel, irrep) on both inputs and the output (``weight_numel = C (n1 + n2 + n_out)``).

The matrices are read off the backend itself (its own synthesis and projection applied to basis
vectors, in the module's dtype), so the kernel reproduces whichever strategy the module uses:
``grid`` (Gauss-Legendre x uniform quadrature, ``G = n_theta n_phi``) or ``fft`` (the same
functions sampled on the FFT's uniform torus grid, a larger ``G``). The ``grid`` strategy gives
the smaller ``G`` and is the one this kernel targets. Dense synthesis costs ``O(D G)`` per channel,
``O(L^4)``, against the separable ``O(L^3)`` of the torch path; at the degrees of MLIPs (``L <= 4``)
the fused kernel avoids writing the ``[E, C, G]`` intermediates instead.
"""

from __future__ import annotations

import torch
from equimol.kernels.autograd import fused_message_passing, per_edge_weight
from equimol.kernels.launch import FactoredProduct

from equimol.tp import register_message_kernel


def grid_factors(tp) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``S1 [d1, G]``, ``S2 [d2, G]`` and ``P [G, d_out]`` (output scale included) of a gaunt module.

    Cached on the module per (dtype, device, buffer storage), so a dtype or device change rebuilds them.
    """
    probe = tp.output_scale
    key = (probe.dtype, probe.device, probe.data_ptr(), tp.strategy)
    cache = tp.__dict__.setdefault("_fused_grid_factors", {})
    if key not in cache:
        cache.clear()
        eye = dict(dtype=probe.dtype, device=probe.device)
        with torch.no_grad():
            synthesis1 = tp._samples("1", torch.eye(tp.irreps_in1.dim // tp.channels, **eye))
            synthesis2 = tp._samples("2", torch.eye(tp.irreps_in2.dim, **eye))
            grid_points = synthesis1.shape[-1]
            projection = tp._project(torch.eye(grid_points, **eye))
            projection = projection * tp.output_scale[tp.irrep_of_component_out]
        cache[key] = (synthesis1.contiguous(), synthesis2.contiguous(), projection.contiguous())
    return cache[key]


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
    w_in, w_attr, w_out = (w.reshape(edges, channels, -1) for w in torch.split(weight, tp.weight_split, dim=1))
    product = FactoredProduct(tp.irreps_in1, tp.irreps_in2, tp.irreps_out, *grid_factors(tp))

    def reference(features, attrs, w1, w2, w3):
        flat = torch.cat([w1.flatten(1), w2.flatten(1), w3.flatten(1)], dim=1)
        messages = tp(features[edge_src], attrs, flat)
        return messages.new_zeros(num_nodes, tp.irreps_out.dim).index_add(0, edge_dst, messages)

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
