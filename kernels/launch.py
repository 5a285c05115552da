r"""Host side of the factored message kernels: argument checks, padding and launches.

A :class:`~equimol.tp.factored.FactoredProduct` (the backend's factored form: irreps and the three
factor matrices) is padded once per dtype and device (:func:`prepare`). :func:`message` launches
the fused gather-product-scatter of :mod:`equimol.kernels.message`, :func:`edge_gradients` the
per-edge gradients. Neither records an autograd graph; see :mod:`equimol.kernels.autograd` for the
differentiable wrapper.

Weights (any of them may be None, meaning one):

* ``w_in`` ``[E, C, len(irreps_in)]``: per (edge, channel, input irrep);
* ``w_attr`` ``[E, C, len(irreps_attr)]``: per (edge, channel, attribute irrep);
* ``w_out`` ``[E, C, n]`` with ``n = len(irreps_out)`` (per output irrep) or ``n = 1`` (one weight per
  channel shared by every output irrep);
* ``w_mid`` ``[E, C, n]``: per (edge, channel, slot) on the rank-one terms, term ``r`` reading slot
  ``rank_map[r]`` of the product (e.g. one weight per path, the slot being the term's path).
"""

from __future__ import annotations

import contextlib

import torch
import triton
from equimol.kernels import message as kernels
from equimol.kernels.edge_gradients import edge_gradients_kernel
from equimol.kernels.layout import column_map, degree_map, pad_matrix, padded, receiver_segments

from equimol.tp.factored import FactoredProduct


def prepare(product: FactoredProduct, dtype: torch.dtype, device: torch.device, slots: tuple[int, ...]) -> _Prepared:
    """Padded factors and index maps of ``product`` for a launch (cached in the product)."""
    key = ("prepared", dtype, str(device), slots)
    if key not in product._cache:
        product._cache[key] = _Prepared(product, dtype, device, slots)
    return product._cache[key]


def _dims(product: FactoredProduct) -> tuple[int, int, int, int]:
    return (
        product.factor_in.shape[0],
        product.factor_attr.shape[0],
        product.factor_in.shape[1],
        product.factor_out.shape[1],
    )


def _check_weight(weight: torch.Tensor | None, name: str, edges: int, channels: int, slots: tuple[int, ...]) -> None:
    if weight is None:
        return
    if weight.dim() != 3 or weight.shape[0] != edges or weight.shape[1] != channels or weight.shape[2] not in slots:
        raise ValueError(
            f"{name} has shape {tuple(weight.shape)}; expected [{edges}, {channels}, n] with n in {list(slots)}"
        )


def _check_mid_weight(product: FactoredProduct, w_mid: torch.Tensor | None, edges: int, channels: int) -> None:
    if w_mid is None:
        return
    if product.rank_map is None:
        raise ValueError("w_mid was given but the product has no rank_map (which term reads which weight slot)")
    slots = int(product.rank_map.max()) + 1 if product.rank_map.numel() else 1
    if w_mid.dim() != 3 or w_mid.shape[0] != edges or w_mid.shape[1] != channels or w_mid.shape[2] < slots:
        raise ValueError(f"w_mid has shape {tuple(w_mid.shape)}; expected [{edges}, {channels}, n] with n >= {slots}")


def _check_indices(index: torch.Tensor, name: str, bound: int, what: str) -> None:
    if index.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} must be an integer index tensor, got {index.dtype}")
    # Out-of-bounds reads do not fault inside a kernel (silent garbage): check once on the host.
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= bound):
        raise ValueError(
            f"{name} holds indices in [{int(index.min())}, {int(index.max())}]; expected 0 <= index < {bound} ({what})"
        )


def _check_device(*tensors: torch.Tensor) -> None:
    if kernels.INTERPRETING:
        return
    for tensor in tensors:
        if tensor is not None and tensor.device.type != "cuda":
            raise ValueError(
                f"kernel='triton' got a tensor on {tensor.device}; without TRITON_INTERPRET=1 the kernels run on a "
                "CUDA GPU only: move the model and batch to 'cuda', or use kernel='torch'"
            )


class _Prepared:
    """Padded factors and index maps of ``product`` on one device and dtype."""

    def __init__(
        self, product: FactoredProduct, dtype: torch.dtype, device: torch.device, slots: tuple[int, ...]
    ) -> None:
        d_in, d_attr, rank, d_out = _dims(product)
        self.channels = product.channels
        self.d_in, self.d_attr, self.rank, self.d_out = d_in, d_attr, rank, d_out
        self.c_p = padded(self.channels, minimum=1)
        self.d_in_p, self.d_attr_p, self.rank_p, self.d_out_p = (
            padded(d_in),
            padded(d_attr),
            padded(rank),
            padded(d_out),
        )
        cast = {"dtype": dtype, "device": device}
        self.f_in = pad_matrix(product.factor_in.to(**cast), self.d_in_p, self.rank_p)
        self.f_attr = pad_matrix(product.factor_attr.to(**cast), self.d_attr_p, self.rank_p)
        self.f_out = pad_matrix(product.factor_out.to(**cast), self.rank_p, self.d_out_p)
        self.base_in, self.stride_in = column_map(product.irreps_in, device)
        self.base_out, self.stride_out = column_map(product.irreps_out, device)
        self.mid_map = torch.zeros(self.rank_p, dtype=torch.int64, device=device)
        if product.rank_map is not None:
            self.mid_map[:rank] = product.rank_map.to(device=device, dtype=torch.int64)
        # A weight with a single slot per channel reads slot 0 everywhere.
        self.deg_in, self.deg_attr, self.deg_out = (
            degree_map(irreps, device)
            if count > 1
            else torch.zeros(padded(irreps.dim // irreps[0].mul), dtype=torch.int64, device=device)
            for irreps, count in zip((product.irreps_in, product.irreps_attr, product.irreps_out), slots)
        )


def _factor_args(prepared: _Prepared) -> dict:
    """The padded factors, the layout maps and the sizes: the kernel arguments every launch shares."""
    return {
        "base_in_ptr": prepared.base_in,
        "stride_in_ptr": prepared.stride_in,
        "f_in_ptr": prepared.f_in,
        "f_attr_ptr": prepared.f_attr,
        "f_out_ptr": prepared.f_out,
        "base_out_ptr": prepared.base_out,
        "stride_out_ptr": prepared.stride_out,
        "C": prepared.channels,
        "D_IN": prepared.d_in,
        "D_ATTR": prepared.d_attr,
        "D_OUT": prepared.d_out,
        "C_P": prepared.c_p,
        "D_IN_P": prepared.d_in_p,
        "D_ATTR_P": prepared.d_attr_p,
        "RANK_P": prepared.rank_p,
        "D_OUT_P": prepared.d_out_p,
    }


def _slots(*weights: torch.Tensor | None) -> tuple[int, ...]:
    return tuple(1 if w is None else w.shape[2] for w in weights)


def _weight_args(prepared: _Prepared, w_in, w_attr, w_out, w_mid, dummy: torch.Tensor) -> dict:
    return {
        "w_mid_ptr": dummy if w_mid is None else w_mid,
        "mid_map_ptr": prepared.mid_map,
        "RANK": prepared.rank,
        "N_MID": 1 if w_mid is None else w_mid.shape[2],
        "HAS_W_MID": w_mid is not None,
        "w_in_ptr": dummy if w_in is None else w_in,
        "w_attr_ptr": dummy if w_attr is None else w_attr,
        "w_out_ptr": dummy if w_out is None else w_out,
        "deg_in_ptr": prepared.deg_in,
        "deg_attr_ptr": prepared.deg_attr,
        "deg_out_ptr": prepared.deg_out,
        "N_IN": 1 if w_in is None else w_in.shape[2],
        "N_ATTR": 1 if w_attr is None else w_attr.shape[2],
        "N_OUT": 1 if w_out is None else w_out.shape[2],
        "HAS_W_IN": w_in is not None,
        "HAS_W_ATTR": w_attr is not None,
        "HAS_W_OUT": w_out is not None,
    }


def _on(device: torch.device):
    """Launch on ``device``'s GPU (Triton launches on the current CUDA device otherwise)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _contiguous(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.contiguous()


def message(
    product: FactoredProduct,
    node_features: torch.Tensor,
    edge_attrs: torch.Tensor,
    w_in: torch.Tensor | None,
    w_attr: torch.Tensor | None,
    w_out: torch.Tensor | None,
    edge_src: torch.Tensor,
    edge_dst: torch.Tensor,
    num_nodes: int,
    deterministic: bool = False,
    w_mid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fused ``m_n = sum_{e: dst(e) = n} o(x_{src(e)}, y_e, w_e)``, no autograd.

    Args:
        product: the factored product.
        node_features: ``[V, irreps_in.dim]`` (mul_ir layout), gathered at ``edge_src``.
        edge_attrs: ``[E, irreps_attr.dim]``.
        w_in, w_attr, w_out: weights as in the module docstring, or None.
        edge_src, edge_dst: ``[E]`` integer indices, ``0 <= src < V``, ``0 <= dst < num_nodes``.
        num_nodes: rows of the result.
        deterministic: receiver-sorted segmented reduction instead of atomics.
        w_mid: weights of the rank-one terms (needs ``product.rank_map``), or None.

    Returns:
        ``[num_nodes, irreps_out.dim]`` in the dtype of ``node_features``.
    """
    edges = edge_src.shape[0]
    channels = product.channels
    if node_features.dim() != 2 or node_features.shape[1] != product.irreps_in.dim:
        raise ValueError(
            f"node_features has shape {tuple(node_features.shape)}; expected [V, {product.irreps_in.dim}] "
            f"for {product.irreps_in}"
        )
    if edge_attrs.shape != (edges, product.irreps_attr.dim):
        raise ValueError(
            f"edge_attrs has shape {tuple(edge_attrs.shape)}; expected [{edges}, {product.irreps_attr.dim}] "
            f"for {product.irreps_attr}"
        )
    _check_weight(w_in, "w_in", edges, channels, (1, len(product.irreps_in)))
    _check_weight(w_attr, "w_attr", edges, channels, (1, len(product.irreps_attr)))
    _check_weight(w_out, "w_out", edges, channels, (1, len(product.irreps_out)))
    _check_mid_weight(product, w_mid, edges, channels)
    _check_indices(edge_src, "edge_src", node_features.shape[0], "rows of node_features")
    _check_indices(edge_dst, "edge_dst", num_nodes, "num_nodes")
    _check_device(node_features, edge_attrs, w_in, w_attr, w_out, w_mid, edge_src, edge_dst)
    dtype, device = node_features.dtype, node_features.device
    out = torch.zeros(num_nodes, product.irreps_out.dim, dtype=dtype, device=device)
    if edges == 0 or num_nodes == 0:
        return out
    prepared = prepare(product, dtype, device, _slots(w_in, w_attr, w_out))
    node_features, edge_attrs = node_features.contiguous(), edge_attrs.to(dtype).contiguous()
    edge_src, edge_dst = edge_src.contiguous(), edge_dst.contiguous()
    w_in, w_attr, w_out, w_mid = (_contiguous(w) for w in (w_in, w_attr, w_out, w_mid))
    common = dict(
        feat_ptr=node_features,
        feat_stride=node_features.shape[1],
        gather_ptr=edge_src,
        attr_ptr=edge_attrs,
        out_ptr=out,
        out_stride=out.shape[1],
        **_factor_args(prepared),
        **_weight_args(prepared, w_in, w_attr, w_out, w_mid, out),
    )

    def grid(meta):
        return (triton.cdiv(edges, meta["BLOCK_EDGES"]),)

    with _on(device):
        if deterministic:
            order, segments = receiver_segments(edge_dst, num_nodes)
            kernels.message_segmented_kernel[(num_nodes,)](
                order_ptr=order,
                segment_ptr=segments,
                BLOCK_EDGES=kernels.segmented_block_edges(prepared.c_p),
                **common,
            )
        else:
            kernels.message_atomic_kernel[grid](scatter_ptr=edge_dst, num_edges=edges, **common)
    return out


def edge_gradients(
    product: FactoredProduct,
    grad_out: torch.Tensor,
    node_features: torch.Tensor,
    edge_attrs: torch.Tensor,
    w_in: torch.Tensor | None,
    w_attr: torch.Tensor | None,
    w_out: torch.Tensor | None,
    edge_src: torch.Tensor,
    edge_dst: torch.Tensor,
    need: tuple[bool, ...],
    w_mid: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, ...]:
    """Gradients of ``<grad_out, message(...)>`` with respect to ``edge_attrs, w_in, w_attr, w_out, w_mid``.

    Args:
        grad_out: ``[num_nodes, irreps_out.dim]`` upstream gradient.
        need: which of ``(edge_attrs, w_in, w_attr, w_out, w_mid)`` to compute (the others come back
            None; a weight that is None has no gradient). A missing fifth entry means False.

    Returns:
        ``[E, D_ATTR]`` and the weight gradients in the shapes of the weights (five entries).
    """
    edges = edge_src.shape[0]
    dtype, device = node_features.dtype, node_features.device
    need = tuple(need) + (False,) * (5 - len(need))
    weights = (w_in, w_attr, w_out, w_mid)
    need_attr = need[0]
    need_weight = [flag and w is not None for flag, w in zip(need[1:], weights)]
    grads = [torch.zeros(edges, product.irreps_attr.dim, dtype=dtype, device=device) if need_attr else None]
    # fresh contiguous buffers: the kernel writes [E, C, n] row-major whatever the strides of the weight
    grads += [
        torch.zeros(w.shape, dtype=dtype, device=device) if flag else None for flag, w in zip(need_weight, weights)
    ]
    if edges == 0 or not (need_attr or any(need_weight)):
        return tuple(grads)
    prepared = prepare(product, dtype, device, _slots(w_in, w_attr, w_out))
    grad_out, node_features = grad_out.contiguous(), node_features.contiguous()
    edge_attrs = edge_attrs.to(dtype).contiguous()
    edge_src, edge_dst = edge_src.contiguous(), edge_dst.contiguous()
    w_in, w_attr, w_out, w_mid = (_contiguous(w) for w in (w_in, w_attr, w_out, w_mid))
    dummy = grad_out
    arguments = _weight_args(prepared, w_in, w_attr, w_out, w_mid, dummy)

    def grid(meta):
        return (triton.cdiv(edges, meta["BLOCK_EDGES"]),)

    with _on(device):
        edge_gradients_kernel[grid](
            feat_ptr=node_features,
            feat_stride=node_features.shape[1],
            src_ptr=edge_src,
            grad_ptr=grad_out,
            grad_stride=grad_out.shape[1],
            dst_ptr=edge_dst,
            attr_ptr=edge_attrs,
            grad_attr_ptr=dummy if grads[0] is None else grads[0],
            grad_w_in_ptr=dummy if grads[1] is None else grads[1],
            grad_w_attr_ptr=dummy if grads[2] is None else grads[2],
            grad_w_out_ptr=dummy if grads[3] is None else grads[3],
            grad_w_mid_ptr=dummy if grads[4] is None else grads[4],
            num_edges=edges,
            N_IN_P=padded(arguments["N_IN"]),
            N_ATTR_P=padded(arguments["N_ATTR"]),
            N_OUT_P=padded(arguments["N_OUT"]),
            N_MID_P=padded(arguments["N_MID"]),
            NEED_ATTR=need_attr,
            NEED_W_IN=need_weight[0],
            NEED_W_ATTR=need_weight[1],
            NEED_W_OUT=need_weight[2],
            NEED_W_MID=need_weight[3],
            **_factor_args(prepared),
            **arguments,
        )
    return tuple(grads)
