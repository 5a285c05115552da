r"""The factored form of a tensor product, and the registry of fused message kernels that run it.

A backend that can write its product of one channel as three dense matrices around an
elementwise product provides a **factored form** (:meth:`TensorProductBackend.factored_form
<equimol.tp.interface.TensorProductBackend.factored_form>`). Per edge ``e`` and channel ``c``:

.. math::

    o_{e,c,k} = w^{\mathrm{out}}_{e,c,\deg(k)} \sum_r F^{\mathrm{out}}_{r k}\, w^{\mathrm{mid}}_{e,c,\pi(r)}
        \Big(\sum_i x_{e,c,i}\, w^{\mathrm{in}}_{e,c,\deg(i)} F^{\mathrm{in}}_{i r}\Big)
        \Big(\sum_j y_{e,j}\, w^{\mathrm{attr}}_{e,c,\deg(j)} F^{\mathrm{attr}}_{j r}\Big)

with ``deg(i)`` the irrep of component ``i`` and ``pi = rank_map`` the weight slot of rank-one term
``r``. ``cp`` is a rank-``2R`` CP product (its parity fold) with one weight per channel or per
path; ``gaunt`` is synthesis on ``G`` quadrature points, a pointwise product and projection, with
weights per (channel, irrep). Any weight group may be absent (then it is one).

**Weight split.** The backend's flat per-edge weight ``[E, weight_numel]`` is the concatenation,
in :attr:`FactoredProduct.weight_split` order, of groups ``[E, C * n]``: a :class:`WeightGroup`
names the factor it scales (``in``, ``attr``, ``out`` or ``mid``), its ``n`` slots, and whether it
is stored channel-major (``[C, n]``, gaunt) or slot-major (``[n, C]``, cg's and cp's per-path
layout ``weight.view(E, n_paths, C)``). :meth:`FactoredProduct.split_weight` gives the kernel's
``[E, C, n]`` views; :meth:`FactoredProduct.join_weight` inverts it.

**Kernels.** A fused kernel registers itself with :func:`register_message_kernel` under a kernel
name (``"triton"``) and serves every backend with a factored form; it names no backend. The
interface finds the package that provides a kernel name through the ``equimol.message_kernels``
entry-point group (``pyproject.toml``: ``triton = "equimol.kernels"``) and imports it on first use,
so ``equimol.tp`` never imports the kernels by name and the kernels import only ``equimol.tp``: no
import circle, and a third-party package can add a kernel the same way.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from e3nn import o3

#: Entry-point group naming, for each kernel name, the module that registers it when imported.
KERNEL_ENTRY_POINTS = "equimol.message_kernels"

Role = Literal["in", "attr", "out", "mid"]

#: ``fn(tp, node_features, edge_attrs, weight, edge_src, edge_dst, num_nodes)`` with the inputs checked
#: by :meth:`~equimol.tp.interface.TensorProductBackend.message_passing` (``weight`` ``[E, weight_numel]``).
MessageKernel = Callable[..., torch.Tensor]
_MESSAGE_KERNELS: dict[str, MessageKernel] = {}


@dataclass(frozen=True)
class WeightGroup:
    """One group of the flat weight: ``C * slots`` numbers per edge scaling factor ``role``.

    ``slot_major``: stored ``[slots, C]`` (True) or ``[C, slots]`` (False) inside the flat weight.
    """

    role: Role
    slots: int
    slot_major: bool = False


@dataclass(frozen=True)
class FactoredProduct:
    """``o = w_out ((x w_in) F_in * (y w_attr) F_attr * w_mid) F_out`` per (edge, channel); see the module docstring.

    Attributes:
        irreps_in: ``C x ...`` gathered node-feature irreps (mul_ir layout, ``D_IN`` per channel).
        irreps_attr: one copy per irrep, edge attributes ``[E, D_ATTR]``.
        irreps_out: ``C x ...`` output irreps (``D_OUT`` per channel).
        factor_in: ``[D_IN, R]``; factor_attr: ``[D_ATTR, R]``; factor_out: ``[R, D_OUT]``.
        rank_map: int64 ``[R]``, the ``mid`` slot of each rank-one term, or None (no ``mid`` weights).
        weight_split: how the flat weight splits into groups (see the module docstring).
    """

    irreps_in: o3.Irreps
    irreps_attr: o3.Irreps
    irreps_out: o3.Irreps
    factor_in: torch.Tensor
    factor_attr: torch.Tensor
    factor_out: torch.Tensor
    rank_map: torch.Tensor | None = None
    weight_split: tuple[WeightGroup, ...] = ()
    # per-product scratch space for kernels (padded factors per dtype and device, the adjoint)
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        d_in, d_attr, d_out = (
            irreps.dim // irreps[0].mul for irreps in (self.irreps_in, self.irreps_attr, self.irreps_out)
        )
        rank = self.factor_in.shape[-1]
        expected = {"factor_in": (d_in, rank), "factor_attr": (d_attr, rank), "factor_out": (rank, d_out)}
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"{name} has shape {tuple(getattr(self, name).shape)}; expected {list(shape)}")
        if self.rank_map is not None and tuple(self.rank_map.shape) != (rank,):
            raise ValueError(f"rank_map has shape {tuple(self.rank_map.shape)}; expected [{rank}]")
        counts = {"in": len(self.irreps_in), "attr": len(self.irreps_attr), "out": len(self.irreps_out)}
        roles = [group.role for group in self.weight_split]
        if len(set(roles)) != len(roles):
            raise ValueError(f"weight_split names a factor twice: {roles}")
        for group in self.weight_split:
            if group.role == "mid":
                if self.rank_map is None:
                    raise ValueError("a 'mid' weight group needs rank_map (which term reads which slot)")
                if rank and group.slots <= int(self.rank_map.max()):
                    raise ValueError(
                        f"'mid' weights have {group.slots} slots but rank_map reads slot {int(self.rank_map.max())}"
                    )
            elif group.slots not in (1, counts[group.role]):
                raise ValueError(f"'{group.role}' weights have {group.slots} slots; expected 1 or {counts[group.role]}")

    @property
    def channels(self) -> int:
        return self.irreps_in[0].mul

    @property
    def weight_numel(self) -> int:
        return self.channels * sum(group.slots for group in self.weight_split)

    def split_weight(self, weight: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """Flat ``[E, weight_numel]`` -> ``(w_in, w_attr, w_out, w_mid)``, each ``[E, C, n]`` (a view) or None."""
        edges, channels = weight.shape[0], self.channels
        groups: dict[str, torch.Tensor] = {}
        chunks = torch.split(weight, [channels * group.slots for group in self.weight_split], dim=1)
        for group, chunk in zip(self.weight_split, chunks):
            if group.slot_major:
                groups[group.role] = chunk.view(edges, group.slots, channels).transpose(1, 2)
            else:
                groups[group.role] = chunk.reshape(edges, channels, group.slots)
        return tuple(groups.get(role) for role in ("in", "attr", "out", "mid"))

    def join_weight(self, *weights: torch.Tensor | None) -> torch.Tensor:
        """Inverse of :meth:`split_weight`: ``(w_in, w_attr, w_out, w_mid)`` -> ``[E, weight_numel]``."""
        by_role = dict(zip(("in", "attr", "out", "mid"), weights))
        parts = []
        for group in self.weight_split:
            w = by_role[group.role]
            parts.append((w.transpose(1, 2) if group.slot_major else w).flatten(1))
        return torch.cat(parts, dim=1)

    def transposed(self) -> FactoredProduct:
        """The adjoint in the gathered input (``F_in`` and ``F_out`` swapped, transposed), cached.

        The kernels call it with the roles of ``w_in`` and ``w_out`` swapped; it has no weight split.
        """
        if "transposed" not in self._cache:
            self._cache["transposed"] = FactoredProduct(
                self.irreps_out,
                self.irreps_attr,
                self.irreps_in,
                self.factor_out.T,
                self.factor_attr,
                self.factor_in.T,
                self.rank_map,
            )
        return self._cache["transposed"]


def factored_form_of(tp) -> FactoredProduct | None:
    """``tp.factored_form()``, rebuilt only when one of the module's buffers changed (``.to()``, in-place edits).

    The key is every buffer's storage, dtype, device and version counter; holding the buffers keeps
    their storage alive, so a key can never match a reused address.
    """
    buffers = tuple(tp.buffers())
    key = tuple((b.data_ptr(), b.dtype, str(b.device), b._version) for b in buffers)
    cache = tp.__dict__.setdefault("_factored_form_cache", {})
    if cache.get("key") != key:
        cache["key"], cache["buffers"], cache["form"] = key, buffers, tp.factored_form()
    return cache["form"]


def register_message_kernel(kernel: str) -> Callable[[MessageKernel], MessageKernel]:
    """Decorator registering the fused ``message_passing`` of every backend that has a factored form.

    The function is called as ``fn(tp, node_features, edge_attrs, weight, edge_src, edge_dst,
    num_nodes)`` with checked inputs (``weight`` ``[E, weight_numel]``) and returns what
    :meth:`~equimol.tp.interface.TensorProductBackend.reference_message_passing` returns.
    """

    def decorator(function: MessageKernel) -> MessageKernel:
        _MESSAGE_KERNELS[kernel] = function
        return function

    return decorator


def kernel_names() -> list[str]:
    """``"torch"`` and every kernel name registered or announced through the entry-point group."""
    announced = {entry.name for entry in importlib.metadata.entry_points(group=KERNEL_ENTRY_POINTS)}
    return ["torch", *sorted(announced | set(_MESSAGE_KERNELS))]


def load_message_kernel(kernel: str) -> MessageKernel:
    """The fused kernel registered as ``kernel``, importing its provider (entry point) on first use.

    Raises:
        ValueError: no such kernel name.
        Whatever the provider raises on import (``equimol.kernels``: TritonUnavailableError).
    """
    if kernel not in _MESSAGE_KERNELS:
        for entry in importlib.metadata.entry_points(group=KERNEL_ENTRY_POINTS):
            if entry.name == kernel:
                entry.load()  # the provider registers its kernel when imported
    if kernel == "torch" or kernel not in _MESSAGE_KERNELS:
        raise ValueError(f"kernel={kernel!r} is not known; expected one of {kernel_names()}")
    return _MESSAGE_KERNELS[kernel]
