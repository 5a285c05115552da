"""Input checks of a tensor product, shared by its forward and by every message-passing kernel.

:meth:`TensorProductBackend.forward <equimol.tp.interface.TensorProductBackend.forward>` checks
``x1``, ``x2`` and the weights with :func:`check_product_inputs`; ``message_passing`` checks node
features, edge attributes, weights and edge indices with :func:`check_message_inputs`, once, before
it hands them to the torch path or a fused kernel. Shared weights (``[weight_numel]``) and internal
weights (None) come back expanded to one row per sample or edge.
"""

from __future__ import annotations

import torch


def module_dtype(tp) -> torch.dtype | None:
    """The dtype of the first floating parameter or buffer (the dtype inputs must have)."""
    for tensor in (*tp.parameters(), *tp.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def rows_of_weight(tp, weight: torch.Tensor | None, rows: int, name: str, per: str) -> torch.Tensor:
    """``weight`` as ``[rows, weight_numel]``: given so, shared ``[weight_numel]`` (expanded) or None (internal).

    ``name`` and ``per`` (``"sample"``, ``"edge"``) word the error messages.
    """
    if weight is None:
        if tp.weight is None:
            raise ValueError(
                f"this {tp.name!r} tensor product was built with internal_weights=False; pass "
                f"{name} of shape [{per[0].upper()}, {tp.weight_numel}]"
            )
        weight = tp.weight
    if weight.dim() == 1:
        weight = weight.unsqueeze(0).expand(rows, -1)
    if weight.dim() != 2 or weight.shape != (rows, tp.weight_numel):
        raise ValueError(
            f"{name} has shape {tuple(weight.shape)}; expected [{rows}, {tp.weight_numel}] "
            f"(per {per}) or [{tp.weight_numel}] (shared) for backend {tp.name!r}"
        )
    return weight


def check_product_inputs(tp, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Check ``x1 [N, irreps_in1.dim]``, ``x2 [N, irreps_in2.dim]`` (one dtype); ``[N, weight_numel]`` weights."""
    if x1.dim() != 2 or x1.shape[-1] != tp.irreps_in1.dim:
        raise ValueError(
            f"x1 has shape {tuple(x1.shape)}; expected [N, {tp.irreps_in1.dim}] for irreps_in1={tp.irreps_in1}"
        )
    if x2.dim() != 2 or x2.shape[-1] != tp.irreps_in2.dim:
        raise ValueError(
            f"x2 has shape {tuple(x2.shape)}; expected [N, {tp.irreps_in2.dim}] for irreps_in2={tp.irreps_in2}"
        )
    if x1.shape[0] != x2.shape[0]:
        raise ValueError(f"x1 has {x1.shape[0]} rows but x2 has {x2.shape[0]}; they must match")
    if x1.dtype != x2.dtype:
        raise ValueError(f"x1 is {x1.dtype} but x2 is {x2.dtype}; cast both to the module's dtype")
    return rows_of_weight(tp, weight, x1.shape[0], "weight", "sample")


def check_message_inputs(
    tp,
    node_features: torch.Tensor,
    edge_attrs: torch.Tensor,
    edge_weight: torch.Tensor | None,
    edge_src: torch.Tensor,
    edge_dst: torch.Tensor,
) -> torch.Tensor:
    """Check ``node_features [V, irreps_in1.dim]``, ``edge_attrs [E, irreps_in2.dim]``, 1-D ``edge_src``/``edge_dst``
    and the weights, all in the module's dtype; returns ``[E, weight_numel]`` weights."""
    if edge_src.shape != edge_dst.shape or edge_src.dim() != 1:
        raise ValueError(
            f"edge_src {tuple(edge_src.shape)} and edge_dst {tuple(edge_dst.shape)} must be 1-D and of equal length"
        )
    edges = edge_src.shape[0]
    for name, tensor, rows, irreps in (
        ("node_features", node_features, "V", tp.irreps_in1),
        ("edge_attrs", edge_attrs, edges, tp.irreps_in2),
    ):
        if tensor.dim() != 2 or tensor.shape[1] != irreps.dim or (rows != "V" and tensor.shape[0] != rows):
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}; expected [{rows}, {irreps.dim}] for {irreps}")
    weight = rows_of_weight(tp, edge_weight, edges, "edge_weight", "edge")
    dtype = module_dtype(tp)
    for name, tensor in (("node_features", node_features), ("edge_attrs", edge_attrs), ("edge_weight", weight)):
        if dtype is not None and tensor.dtype != dtype:
            raise ValueError(f"{name} is {tensor.dtype} but the {tp.name!r} tensor product is {dtype}; cast one")
    return weight
