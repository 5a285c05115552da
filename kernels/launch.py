r"""Host side of the factored message kernels: argument checks, padding and launches.

A :class:`~equimol.tp.factored.FactoredProduct` (the backend's factored form: irreps and the three
factor matrices) is padded once per dtype and device (:func:`prepare`). :func:`message` launches
the fused gather-product-scatter of :mod:`equimol.kernels.message`, :func:`edge_gradients` the
per-edge gradients. Neither records an autograd graph; see :mod:`equimol.kernels.autograd` for the
differentiable wrapper.

A launch takes a :class:`Message` (the product, its inputs and the graph). Its ``weights`` are
``(w_in, w_attr, w_out, w_mid)`` (what :meth:`~equimol.tp.factored.FactoredProduct.split_weight`
returns; any of them may be None, meaning one):

* ``w_in`` ``[E, C, len(irreps_in)]``: per (edge, channel, input irrep);
* ``w_attr`` ``[E, C, len(irreps_attr)]``: per (edge, channel, attribute irrep);
* ``w_out`` ``[E, C, n]`` with ``n = len(irreps_out)`` (per output irrep) or ``n = 1`` (one weight per
  channel shared by every output irrep);
* ``w_mid`` ``[E, C, n]``: per (edge, channel, slot) on the rank-one terms, term ``r`` reading slot
  ``rank_map[r]`` of the product (e.g. one weight per path, the slot being the term's path).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

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
        self.layout_in, self.layout_out = (self.base_in, self.stride_in), (self.base_out, self.stride_out)
        pads = (self.c_p, self.d_in_p, self.d_attr_p, self.rank_p, self.d_out_p)
        self.pads = dict(zip(("C_P", "D_IN_P", "D_ATTR_P", "RANK_P", "D_OUT_P"), pads))
        self.factors = (self.f_in, self.f_attr, self.f_out)
        self.maps = (self.deg_in, self.deg_attr, self.deg_out, self.mid_map)


Weights = tuple[torch.Tensor | None, ...]


@dataclass(frozen=True)
class Message:
    """One fused message ``m_n = sum_{e: dst(e) = n} o(x_{src(e)}, y_e, w_e)``: what a launch reads.

    Attributes:
        product: the factored product.
        node_features: ``[V, irreps_in.dim]`` (mul_ir layout), gathered at ``edge_src``.
        edge_attrs: ``[E, irreps_attr.dim]``.
        weights: ``(w_in, w_attr, w_out, w_mid)`` as in the module docstring (``w_mid`` may be left
            out; it needs ``product.rank_map``).
        edge_src, edge_dst: ``[E]`` integer indices, ``0 <= src < V``, ``0 <= dst < num_nodes``.
        num_nodes: rows of the result.
    """

    product: FactoredProduct
    node_features: torch.Tensor
    edge_attrs: torch.Tensor
    weights: Weights
    edge_src: torch.Tensor
    edge_dst: torch.Tensor
    num_nodes: int

    def __post_init__(self) -> None:
        weights = tuple(self.weights) + (None,) * (4 - len(self.weights))
        if len(weights) != 4:
            raise ValueError(f"weights has {len(self.weights)} entries; expected (w_in, w_attr, w_out[, w_mid])")
        object.__setattr__(self, "weights", weights)

    def adjoint(self, grad_out: torch.Tensor) -> Message:
        """The message whose result is the gradient of ``<grad_out, m>`` in ``node_features``.

        The transposed product gathered at the receivers and scattered into the senders, with the
        roles of ``w_in`` and ``w_out`` swapped.
        """
        w_in, w_attr, w_out, w_mid = self.weights
        return Message(
            self.product.transposed(),
            grad_out,
            self.edge_attrs,
            (w_out, w_attr, w_in, w_mid),
            self.edge_dst,
            self.edge_src,
            self.node_features.shape[0],
        )

    def check(self) -> None:
        """Raise ValueError naming the first input whose shape, index range or device is wrong."""
        product, features, edges, channels = (
            self.product,
            self.node_features,
            self.edge_src.shape[0],
            self.product.channels,
        )
        if features.dim() != 2 or features.shape[1] != product.irreps_in.dim:
            raise ValueError(
                f"node_features has shape {tuple(features.shape)}; expected [V, {product.irreps_in.dim}] "
                f"for {product.irreps_in}"
            )
        if self.edge_attrs.shape != (edges, product.irreps_attr.dim):
            raise ValueError(
                f"edge_attrs has shape {tuple(self.edge_attrs.shape)}; expected [{edges}, {product.irreps_attr.dim}] "
                f"for {product.irreps_attr}"
            )
        w_in, w_attr, w_out, w_mid = self.weights
        for weight, name, irreps in zip(
            (w_in, w_attr, w_out),
            ("w_in", "w_attr", "w_out"),
            (product.irreps_in, product.irreps_attr, product.irreps_out),
        ):
            _check_weight(weight, name, edges, channels, (1, len(irreps)))
        _check_mid_weight(product, w_mid, edges, channels)
        _check_indices(self.edge_src, "edge_src", features.shape[0], "rows of node_features")
        _check_indices(self.edge_dst, "edge_dst", self.num_nodes, "num_nodes")
        _check_device(features, self.edge_attrs, *self.weights, self.edge_src, self.edge_dst)

    def prepared(self) -> tuple[_Prepared, dict]:
        """Padded factors and maps for this message, and the kernel arguments both kernels share.

        The inputs are made contiguous (``edge_attrs`` cast to the dtype of ``node_features``); a
        weight that is None is passed as a dummy pointer the kernel never reads.
        """
        features = self.node_features.contiguous()
        dtype, device = features.dtype, features.device
        weights = tuple(None if w is None else w.contiguous() for w in self.weights)
        prepared = prepare(self.product, dtype, device, tuple(1 if w is None else w.shape[2] for w in weights[:3]))
        slots = tuple(1 if w is None else w.shape[2] for w in weights)
        has = {f"HAS_W_{name}": w is not None for name, w in zip(("IN", "ATTR", "OUT", "MID"), weights)}
        arguments = dict(
            feat_ptr=features,
            feat_stride=features.shape[1],
            layout_in=prepared.layout_in,
            attr_ptr=self.edge_attrs.to(dtype).contiguous(),
            weights=tuple(features if w is None else w for w in weights),
            maps=prepared.maps,
            factors=prepared.factors,
            sizes=(
                prepared.channels,
                prepared.d_in,
                prepared.d_attr,
                prepared.d_out,
                *slots[:3],
                prepared.rank,
                slots[3],
            ),
            layout_out=prepared.layout_out,
            **prepared.pads,
            **has,
        )
        return prepared, arguments


def _on(device: torch.device):
    """Launch on ``device``'s GPU (Triton launches on the current CUDA device otherwise)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _edge_grid(edges: int):
    def grid(meta):
        return (triton.cdiv(edges, meta["BLOCK_EDGES"]),)

    return grid


def message(inputs: Message, deterministic: bool = False) -> torch.Tensor:
    """Fused ``m_n = sum_{e: dst(e) = n} o(x_{src(e)}, y_e, w_e)`` of ``inputs``, no autograd.

    Args:
        inputs: the product, its inputs and the graph (checked here: ValueError naming the input).
        deterministic: receiver-sorted segmented reduction instead of atomics.

    Returns:
        ``[num_nodes, irreps_out.dim]`` in the dtype of ``node_features``.
    """
    inputs.check()
    edges, num_nodes, features = inputs.edge_src.shape[0], inputs.num_nodes, inputs.node_features
    out = torch.zeros(num_nodes, inputs.product.irreps_out.dim, dtype=features.dtype, device=features.device)
    if edges == 0 or num_nodes == 0:
        return out
    prepared, arguments = inputs.prepared()
    arguments.update(gather_ptr=inputs.edge_src.contiguous(), out_ptr=out, out_stride=out.shape[1])
    with _on(features.device):
        if deterministic:
            order, segments = receiver_segments(inputs.edge_dst, num_nodes)
            kernels.message_kernel[(num_nodes,)](
                scatter_ptr=order,
                order_ptr=order,
                segment_ptr=segments,
                num_edges=edges,
                SEGMENTED=True,
                BLOCK_EDGES=kernels.segmented_block_edges(prepared.c_p),
                **arguments,
            )
        else:
            kernels.message_atomic_kernel[_edge_grid(edges)](
                scatter_ptr=inputs.edge_dst.contiguous(),
                order_ptr=inputs.edge_dst,
                segment_ptr=inputs.edge_dst,
                num_edges=edges,
                SEGMENTED=False,
                **arguments,
            )
    return out


def edge_gradients(inputs: Message, grad_out: torch.Tensor, need: tuple[bool, ...]) -> tuple[torch.Tensor | None, ...]:
    """Gradients of ``<grad_out, message(inputs)>`` with respect to ``edge_attrs, w_in, w_attr, w_out, w_mid``.

    Args:
        inputs: as for :func:`message` (already checked by the forward).
        grad_out: ``[num_nodes, irreps_out.dim]`` upstream gradient.
        need: which of ``(edge_attrs, w_in, w_attr, w_out, w_mid)`` to compute (the others come back
            None; a weight that is None has no gradient). A missing fifth entry means False.

    Returns:
        ``[E, D_ATTR]`` and the weight gradients in the shapes of the weights (five entries).
    """
    edges = inputs.edge_src.shape[0]
    dtype, device = inputs.node_features.dtype, inputs.node_features.device
    need = tuple(need) + (False,) * (5 - len(need))
    need_attr = need[0]
    need_weight = [flag and w is not None for flag, w in zip(need[1:], inputs.weights)]
    grads = [torch.zeros(edges, inputs.product.irreps_attr.dim, dtype=dtype, device=device) if need_attr else None]
    # fresh contiguous buffers: the kernel writes [E, C, n] row-major whatever the strides of the weight
    grads += [
        torch.zeros(w.shape, dtype=dtype, device=device) if flag else None
        for flag, w in zip(need_weight, inputs.weights)
    ]
    if edges == 0 or not (need_attr or any(need_weight)):
        return tuple(grads)
    _, arguments = inputs.prepared()
    grad_out = grad_out.contiguous()
    slots = arguments["sizes"][4:7] + arguments["sizes"][8:]
    with _on(device):
        edge_gradients_kernel[_edge_grid(edges)](
            src_ptr=inputs.edge_src.contiguous(),
            grad_ptr=grad_out,
            grad_stride=grad_out.shape[1],
            dst_ptr=inputs.edge_dst.contiguous(),
            grads=tuple(grad_out if g is None else g for g in grads),
            num_edges=edges,
            N_IN_P=padded(slots[0]),
            N_ATTR_P=padded(slots[1]),
            N_OUT_P=padded(slots[2]),
            N_MID_P=padded(slots[3]),
            NEED_ATTR=need_attr,
            NEED_W_IN=need_weight[0],
            NEED_W_ATTR=need_weight[1],
            NEED_W_OUT=need_weight[2],
            NEED_W_MID=need_weight[3],
            **arguments,
        )
    return tuple(grads)
