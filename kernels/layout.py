r"""Index maps that let a kernel read and write e3nn's "mul_ir" layout in channel-major order.

A feature with irreps ``C x l_1 + C x l_2 + ...`` is stored by e3nn as ``[N, irreps.dim]``: block
``i`` holds ``C * (2 l_i + 1)`` numbers, channel-major inside the block. The kernels work on rows
``(edge, channel)`` with ``D = sum_i (2 l_i + 1)`` columns (the channel-major layout of
:func:`equimol.tp.to_channel_major`). Component ``k`` of channel ``c`` lives at column
``base_k + c * stride_k`` of the mul_ir row (:func:`equimol.tp.irreps.component_columns`). The
kernels gather and scatter through these two integer vectors, so no layout conversion is ever
materialised.

Padded sizes: ``tl.dot`` on a GPU needs every dimension to be a power of two and at least 16, so
matrices and maps are zero-padded to :func:`padded`. Zero rows/columns of the factor matrices make
the padding contribute exactly nothing.
"""

from __future__ import annotations

import functools

import torch
from e3nn import o3

from equimol.tp.irreps import component_columns, component_irreps

#: Smallest padded extent of a ``tl.dot`` operand dimension (GPU tensor-core tiles).
MIN_DOT_EXTENT = 16


def padded(size: int, minimum: int = MIN_DOT_EXTENT) -> int:
    """The next power of two ``>= max(size, minimum)``."""
    extent = max(int(size), minimum, 1)
    return 1 << (extent - 1).bit_length()


@functools.lru_cache(maxsize=256)
def _column_map_cpu(irreps: str, padded_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    base, stride = component_columns(o3.Irreps(irreps))
    return pad_vector(base, padded_dim), pad_vector(stride, padded_dim)


def column_map(irreps: o3.Irreps, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(base, stride)`` int64 vectors ``[padded(D)]`` locating component ``k`` of channel ``c``.

    Args:
        irreps: uniform-multiplicity irreps (``C x l`` blocks) of the mul_ir feature.
        device: where the kernel runs.

    Returns:
        Two int64 tensors of length ``padded(D)``, ``D = sum (2 l + 1)``; padding entries are zero
        (the kernels mask them).
    """
    dim = sum(ir.dim for _, ir in irreps)
    base, stride = _column_map_cpu(str(irreps), padded(dim))
    return base.to(device), stride.to(device)


def degree_map(irreps: o3.Irreps, device: torch.device) -> torch.Tensor:
    """Int64 ``[padded(D)]``: the irrep index ``i`` of each channel-major component ``k`` (0 on padding).

    Weights given per (sample, channel, irrep) ``[E, C, len(irreps)]`` are read through this map.
    """
    index = component_irreps(irreps)
    return pad_vector(index, padded(index.shape[0])).to(device)


def pad_vector(vector: torch.Tensor, size: int) -> torch.Tensor:
    """``vector`` followed by zeros up to ``size`` entries."""
    return torch.cat([vector, vector.new_zeros(size - vector.shape[0])])


def pad_matrix(matrix: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """Zero-pad a 2-D ``matrix`` to ``[rows, columns]`` (contiguous, same dtype and device)."""
    out = matrix.new_zeros(rows, columns)
    out[: matrix.shape[0], : matrix.shape[1]] = matrix
    return out


def receiver_segments(receivers: torch.Tensor, num_receivers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort edges by receiver for a segmented (atomic-free) reduction.

    Args:
        receivers: ``[E]`` int64 receiving row of each edge.
        num_receivers: number of output rows.

    Returns:
        ``order`` ``[E]`` (edge ids sorted by receiver, stable so ties keep edge order) and
        ``segments`` ``[num_receivers + 1]`` with the edges of receiver ``i`` at
        ``order[segments[i]:segments[i + 1]]`` (an empty range for a receiver with no edges).
    """
    order = torch.argsort(receivers, stable=True)
    counts = torch.bincount(receivers, minlength=num_receivers)
    segments = torch.zeros(num_receivers + 1, dtype=torch.int64, device=receivers.device)
    segments[1:] = torch.cumsum(counts, dim=0)
    return order, segments
