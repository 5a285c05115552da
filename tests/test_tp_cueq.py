"""Backend ``cueq`` (cuEquivariance, PyTorch fallback on the CPU) against ``cg`` in float64.

Tolerances: ``REFERENCE_TOL`` / ``EQUIVARIANCE_TOL`` = 1e-10 from the harness (exact products reach
about 1e-15; see ``tests/harness.py``). Both backends use float64 coupling coefficients, so any
larger difference is a wrong path, coefficient, normalization or weight layout.
"""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from e3nn import o3
from harness import EQUIVARIANCE_TOL, REFERENCE_TOL, check_gradients, random_inputs, tp_equivariance_error

from equimol.tp import TensorProduct, available_backends, interface

cuet = pytest.importorskip("cuequivariance_torch", reason="the cueq extra is part of the test extra")

from equimol.tp.cueq import channelwise_path_order  # noqa: E402  (needs cuequivariance)

IRREPS = [
    ("3x0e + 3x1o", "0e + 1o", "3x0e + 3x1o + 3x1e"),
    ("2x0e + 2x1o + 2x1e + 2x2e", "0e + 1o + 2e", "2x0e + 2x0o + 2x1o + 2x1e + 2x2e + 2x2o"),
    ("2x0o + 2x2e + 2x3o", "1x0e + 1x1o + 1x2e + 1x3o", "2x0e + 2x1o + 2x2e + 2x3o + 2x3e"),
    ("4x0e + 4x1o + 4x2e + 4x3o", "0e + 1o + 2e + 3o", "4x0e + 4x1o + 4x2e + 4x3o"),
]


def _pair(irreps, dtype=torch.float64):
    return (
        TensorProduct(*irreps, backend="cg", dtype=dtype),
        TensorProduct(*irreps, backend="cueq", dtype=dtype),
    )


@pytest.mark.parametrize("irreps", IRREPS)
def test_cueq_equals_cg_per_sample_and_shared_weights(irreps):
    cg, cueq = _pair(irreps)
    assert cueq.weight_numel == cg.weight_numel
    x1, x2, weight = random_inputs(cg, count=7)
    assert (cueq(x1, x2, weight) - cg(x1, x2, weight)).abs().max() <= REFERENCE_TOL
    assert (cueq(x1, x2, weight[0]) - cg(x1, x2, weight[0])).abs().max() <= REFERENCE_TOL


@pytest.mark.parametrize("irreps", IRREPS[1:3])
def test_cueq_equivariant_under_rotation_and_inversion(irreps):
    # random_orthogonal_matrices: rotations and the same rotations composed with inversion.
    assert tp_equivariance_error(TensorProduct(*irreps, backend="cueq", dtype=torch.float64)) <= EQUIVARIANCE_TOL


@pytest.mark.parametrize("irreps", [IRREPS[0], ("1x0e + 1x1o + 1x2e", "0e + 1o + 2e", "1x0e + 1x0o + 1x1e + 1x2o")])
def test_cueq_gradcheck_and_gradgradcheck(irreps):
    check_gradients(TensorProduct(*irreps, backend="cueq", dtype=torch.float64))


@pytest.mark.parametrize("shared", [False, True])
def test_cueq_message_passing_matches_cg(shared):
    cg, cueq = _pair(IRREPS[2])
    generator = torch.Generator().manual_seed(3)
    num_nodes, num_edges = 5, 17
    nodes = torch.randn(num_nodes, cg.irreps_in1.dim, generator=generator, dtype=torch.float64)
    _, attrs, weight = random_inputs(cg, count=num_edges, seed=4)
    weight = weight[0] if shared else weight
    src = torch.randint(0, num_nodes, (num_edges,), generator=generator)
    dst = torch.randint(0, num_nodes - 1, (num_edges,), generator=generator)  # node 4 receives nothing
    inputs = [t.clone().requires_grad_(True) for t in (nodes, attrs, weight)]
    expected = cg.message_passing(*inputs, src, dst, num_nodes)
    result = cueq.message_passing(*inputs, src, dst, num_nodes)
    assert (result - expected).abs().max() <= REFERENCE_TOL
    assert result[num_nodes - 1].abs().max() == 0.0
    upstream = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(result, inputs, upstream), torch.autograd.grad(expected, inputs, upstream)):
        assert (a - b).abs().max() <= REFERENCE_TOL


def test_cueq_internal_weights_and_checkpoint_hold_only_the_weight():
    cg, cueq = _pair(IRREPS[1])
    assert list(cueq.state_dict()) == ["weight"]  # cuEquivariance's constants are rebuilt, not saved
    cueq.load_state_dict({"weight": cg.weight.detach().clone()})  # identity weight map: a cg weight loads
    x1, x2, _ = random_inputs(cg, count=4)
    assert (cueq(x1, x2) - cg(x1, x2)).abs().max() <= REFERENCE_TOL


def test_cueq_float64_exact_after_double_from_float32():
    cg = TensorProduct(*IRREPS[2], backend="cg", dtype=torch.float64)
    cueq = TensorProduct(*IRREPS[2], backend="cueq", dtype=torch.float32).double()
    x1, x2, weight = random_inputs(cg, count=5)
    assert (cueq(x1, x2, weight) - cg(x1, x2, weight)).abs().max() <= REFERENCE_TOL
    assert torch.get_default_dtype() == torch.float32


def test_cueq_float32_close_to_cg():
    cg, cueq = _pair(IRREPS[3], dtype=torch.float32)
    x1, x2, weight = (t.float() for t in random_inputs(cg, count=5))
    assert (cueq(x1, x2, weight) - cg(x1, x2, weight)).abs().max() <= 1e-5  # float32 rounding of O(1) sums


def test_cueq_weight_map_reproduces_cuequivariance_channelwise_layer():
    # cuet.ChannelWiseTensorProduct: paths sorted by output irrep, one output block per path, each
    # path normalized alone. Permuting weights with channelwise_path_order and summing its blocks
    # over each output irrep with 1/sqrt(fan-in) must give this backend. irreps_out is deliberately
    # not in cuEquivariance's sorted order, so the permutation is not the identity.
    cue = pytest.importorskip("cuequivariance")
    irreps_in1, irreps_in2 = o3.Irreps("2x0e + 2x1o + 2x2e"), o3.Irreps("0e + 1o + 2e")
    irreps_out = o3.Irreps("2x2e + 2x1o + 2x0e + 2x1e")
    cueq = TensorProduct(irreps_in1, irreps_in2, irreps_out, backend="cueq", dtype=torch.float64)
    layer = cuet.ChannelWiseTensorProduct(
        cue.Irreps(cue.O3, str(irreps_in1)),
        cue.Irreps(cue.O3, str(irreps_in2)),
        filter_irreps_out=[cue.O3(ir.l, ir.p) for _, ir in irreps_out],
        layout=cue.mul_ir,
        shared_weights=False,
        internal_weights=False,
        method="naive",
        dtype=torch.float64,
    )
    order = channelwise_path_order(irreps_in1, irreps_in2, irreps_out)
    assert sorted(order) == list(range(len(cueq.paths))) and order != sorted(order)
    x1, x2, weight = random_inputs(cueq, count=4)
    cuet_weight = weight.view(4, len(cueq.paths), -1)[:, order].reshape(4, -1)
    blocks = _split_blocks(layer(x1, x2, cuet_weight), layer.irreps_out)
    expected = []
    for _, ir in irreps_out:
        mine = [block for block_ir, block in blocks if block_ir == (ir.l, ir.p)]
        expected.append(sum(mine).reshape(4, -1) / len(mine) ** 0.5)
    assert (cueq(x1, x2, weight) - torch.cat(expected, dim=-1)).abs().max() <= REFERENCE_TOL


def _split_blocks(x: torch.Tensor, irreps) -> list[tuple[tuple[int, int], torch.Tensor]]:
    """``mul_ir`` output of a cuEquivariance layer into ``((l, p), [N, mul, 2l+1])`` blocks."""
    blocks, start = [], 0
    for mul, ir in irreps:
        blocks.append(((ir.l, ir.p), x[:, start : start + mul * ir.dim].reshape(x.shape[0], mul, ir.dim)))
        start += mul * ir.dim
    return blocks


def test_cueq_descriptor_fits_the_uniform_1d_cuda_kernel():
    # cuEquivariance's fast kernel needs one uniform mode after flattening (its own u1d test).
    descriptor = TensorProduct(*IRREPS[3], backend="cueq").descriptor.flatten_coefficient_modes().squeeze_modes()
    assert descriptor.all_same_segment_shape()
    assert descriptor.subscripts.modes() == ["u"]


def test_cueq_on_cpu_chooses_the_fallback_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tp = TensorProduct(*IRREPS[0], backend="cueq")
    assert tp.method == "naive"
    with pytest.raises(ValueError, match="method='fast'"):
        TensorProduct(*IRREPS[0], backend="cueq", method="fast")


def test_cueq_refuses_the_triton_kernel_clearly():
    # cuEquivariance fuses gather and scatter itself; the Triton kernel serves factored backends only.
    with pytest.raises(ValueError, match="backend 'cueq' has none: use kernel='torch'"):
        TensorProduct(*IRREPS[0], backend="cueq", kernel="triton")


def test_cueq_without_the_package_names_the_pip_extra(monkeypatch):
    for name in [m for m in sys.modules if m.startswith(("cuequivariance", "equimol.tp.cueq"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cuequivariance_torch", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "cuequivariance", None)
    monkeypatch.delitem(interface._BACKENDS, "cueq", raising=False)
    assert "cueq" not in available_backends()
    assert {"cg", "gaunt", "cp"} <= set(available_backends())
    with pytest.raises(ValueError, match=r"pip install 'equimol\[cueq\]'"):
        TensorProduct(*IRREPS[0], backend="cueq")
