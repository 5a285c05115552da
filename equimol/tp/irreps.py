r"""Irreps parsing, validation and the channel-major layout shared by every backend.

The TP interface works on the channel-wise ("uvu") product used by MLIP convolutions:

* ``irreps_in1`` = ``C x l1 + C x l1' + ...``: node features, the same number ``C`` of channels in
  every irrep (e.g. ``"16x0e + 16x1o + 16x2e"``);
* ``irreps_in2`` = ``1 x l2 + 1 x l2' + ...``: one copy of each irrep (edge spherical harmonics);
* ``irreps_out`` = ``C x l3 + ...``: the same ``C`` channels.

**Layouts.** This module is the one home of the conversions between them. e3nn stores a feature in
the "mul_ir" layout: block ``i`` holds ``mul_i * (2 l_i + 1)`` numbers, channel-major inside the
block. With ``C`` channels in every irrep and ``D = sum_i (2 l_i + 1)`` components per channel,
component ``k`` (the ``m``-th of irrep ``i``) of channel ``c`` sits at column

.. math:: \mathrm{col}(c, k) = \mathrm{base}_k + c\, \mathrm{stride}_k,
          \qquad \mathrm{base}_k = \mathrm{start}_i + m, \quad \mathrm{stride}_k = 2 l_i + 1

(:func:`component_columns`). The backends and kernels read it in three other orders:

=====================  ==============  ====================================================================
channel-major          ``[N, C, D]``   :func:`to_channel_major` / :func:`from_channel_major` (``cp``, Gaunt
                                       self-product)
component-major        ``[N, D, C]``   gather with :func:`component_major_index`, back with its ``argsort``
                                       (``cg``, ``gaunt``, ``cp``; it is cuEquivariance's ``ir_mul``)
feature-major          ``[D, N, C]``   :func:`to_feature_major` (Gaunt self-product)
=====================  ==============  ====================================================================

The fused kernels gather through ``(base, stride)`` themselves (:mod:`equimol.kernels.layout` pads them).
"""

from __future__ import annotations

import torch
from e3nn import o3

IrrepsLike = o3.Irreps | str


def parse_irreps(irreps: IrrepsLike, name: str) -> o3.Irreps:
    """Parse ``irreps`` (an e3nn ``Irreps`` or a string) and name the argument in any error."""
    if isinstance(irreps, o3.Irreps):
        return irreps
    try:
        return o3.Irreps(irreps)
    except (ValueError, TypeError, AssertionError) as error:
        raise ValueError(
            f"{name}={irreps!r} is not a valid irreps string; expected e.g. '16x0e + 16x1o + 16x2e' ({error})"
        ) from error


def uniform_multiplicity(irreps: o3.Irreps, name: str) -> int:
    """Return the common multiplicity of all irreps in ``irreps``; raise ValueError if they differ."""
    muls = {mul for mul, _ in irreps}
    if len(irreps) == 0:
        raise ValueError(f"{name} is empty; expected at least one irrep")
    if len(muls) != 1:
        raise ValueError(
            f"{name}={irreps} has different multiplicities {sorted(muls)}; the channel-wise (uvu) "
            "product needs the same number of channels in every irrep, e.g. '16x0e + 16x1o'"
        )
    return muls.pop()


def to_channel_major(x: torch.Tensor, irreps: o3.Irreps) -> torch.Tensor:
    """Reorder ``x`` ``[N, irreps.dim]`` (mul_ir layout, uniform mul ``C``) into ``[N, C, D]``.

    ``D = sum_i (2 l_i + 1)``; component ``d`` of the result runs over the irreps in order.
    """
    channels = irreps[0].mul
    blocks = [x[:, sl].reshape(x.shape[0], channels, ir.dim) for (_, ir), sl in zip(irreps, irreps.slices())]
    return torch.cat(blocks, dim=-1)


def from_channel_major(y: torch.Tensor, irreps: o3.Irreps) -> torch.Tensor:
    """Inverse of :func:`to_channel_major`: ``[N, C, D]`` into ``[N, irreps.dim]`` (mul_ir layout)."""
    blocks = []
    start = 0
    for _, ir in irreps:
        blocks.append(y[:, :, start : start + ir.dim].reshape(y.shape[0], -1))
        start += ir.dim
    return torch.cat(blocks, dim=-1)


def to_feature_major(x: torch.Tensor, irreps: o3.Irreps) -> torch.Tensor:
    """``[N, irreps.dim]`` (mul_ir, uniform ``C``) -> ``[D, N, C]`` (one copy)."""
    count, channels = x.shape[0], irreps[0].mul
    blocks = [
        x[:, sl].reshape(count, channels, ir.dim).permute(2, 0, 1) for (_, ir), sl in zip(irreps, irreps.slices())
    ]
    return torch.cat(blocks, dim=0)


def degree_offsets(irreps: o3.Irreps) -> list[tuple[int, int]]:
    """``(start, stop)`` of each irrep inside one channel of the channel-major layout."""
    offsets = []
    start = 0
    for _, ir in irreps:
        offsets.append((start, start + ir.dim))
        start += ir.dim
    return offsets


def component_columns(irreps: o3.Irreps) -> tuple[torch.Tensor, torch.Tensor]:
    """``(base, stride)``, int64 ``[D]`` each: component ``k`` of channel ``c`` sits at column
    ``base[k] + c * stride[k]`` of the mul_ir layout (see the module docstring)."""
    base, stride = [], []
    for (_, ir), block in zip(irreps, irreps.slices()):
        base += range(block.start, block.start + ir.dim)
        stride += [ir.dim] * ir.dim
    return torch.tensor(base, dtype=torch.int64), torch.tensor(stride, dtype=torch.int64)


def component_irreps(irreps: o3.Irreps) -> torch.Tensor:
    """Int64 ``[D]``: the index ``i`` of the irrep that component ``k`` belongs to."""
    return torch.cat([torch.full((ir.dim,), i, dtype=torch.int64) for i, (_, ir) in enumerate(irreps)])


def component_major_index(irreps: o3.Irreps) -> torch.Tensor:
    """Gather index from the mul_ir layout (uniform ``C``) to the component-major layout ``[N, D, C]``.

    ``x.index_select(1, index).view(N, D, C)`` puts component ``d`` of channel ``u`` at ``[:, d, u]``:
    the ``C`` channels of a component are contiguous, so per-(sample, channel) weights broadcast
    over components without a stride-0 inner loop. The inverse permutation (``argsort``) gathers back.
    This is cuEquivariance's ``ir_mul`` layout.
    """
    base, stride = component_columns(irreps)
    return (base[:, None] + torch.arange(irreps[0].mul)[None, :] * stride[:, None]).flatten()
