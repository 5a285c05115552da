"""The feature-layout conversions of :mod:`equimol.tp.irreps` against a direct reading of e3nn's mul_ir layout."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from equimol.tp.irreps import (
    component_columns,
    component_irreps,
    component_major_index,
    from_channel_major,
    to_channel_major,
    to_feature_major,
)

# a repeated degree and an odd-parity block: the layouts must not assume one block per degree
IRREPS = o3.Irreps("3x0e + 3x1o + 3x2e + 3x1e")


def _channel_major_by_hand(x: torch.Tensor, irreps: o3.Irreps) -> torch.Tensor:
    """``[N, C, D]``: component ``m`` of irrep ``i``, channel ``c``, read one number at a time."""
    channels = irreps[0].mul
    out = torch.empty(x.shape[0], channels, sum(ir.dim for _, ir in irreps), dtype=x.dtype)
    k = 0
    for (_, ir), block in zip(irreps, irreps.slices()):
        for m in range(ir.dim):
            for c in range(channels):
                out[:, c, k] = x[:, block.start + c * ir.dim + m]
            k += 1
    return out


@pytest.fixture
def features() -> torch.Tensor:
    return torch.randn(5, IRREPS.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def test_channel_and_feature_major_read_the_mul_ir_layout(features):
    expected = _channel_major_by_hand(features, IRREPS)
    assert torch.equal(to_channel_major(features, IRREPS), expected)
    assert torch.equal(from_channel_major(expected, IRREPS), features)
    assert torch.equal(to_feature_major(features, IRREPS), expected.permute(2, 0, 1))


def test_component_major_index_and_columns(features):
    expected = _channel_major_by_hand(features, IRREPS)  # [N, C, D]
    index = component_major_index(IRREPS)
    assert torch.equal(features.index_select(1, index).view(5, -1, 3), expected.transpose(1, 2))
    assert torch.equal(features.index_select(1, index).index_select(1, index.argsort()), features)
    base, stride = component_columns(IRREPS)
    columns = base[None, :] + torch.arange(3)[:, None] * stride[None, :]  # [C, D]
    assert torch.equal(features[:, columns], expected)
    assert component_irreps(IRREPS).tolist() == [0, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3]


def test_the_kernels_maps_are_the_padded_columns():
    from equimol.kernels.layout import column_map, degree_map

    base, stride = column_map(IRREPS, torch.device("cpu"))
    expected_base, expected_stride = component_columns(IRREPS)
    assert base.shape == stride.shape == (16,)
    assert torch.equal(base[:12], expected_base) and torch.equal(stride[:12], expected_stride)
    assert not base[12:].any() and not stride[12:].any()
    assert torch.equal(degree_map(IRREPS, torch.device("cpu"))[:12], component_irreps(IRREPS))
