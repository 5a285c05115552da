"""``kernel="triton"`` for the ``cp`` and ``gaunt`` backends under the Triton CPU interpreter.

Reference: the same backend with ``kernel="torch"`` (gather, ``forward``, ``index_add``).
Tolerances as in ``test_kernels.py``: float64 ``REFERENCE_TOL = 1e-10`` (summation order only,
measured about 1e-14); float32 ``1e-5`` times the largest reference magnitude. Equivariance of the
fused convolution: ``EQUIVARIANCE_TOL = 1e-10`` in float64 under rotations and rotations with
inversion; both products are exactly equivariant here (``cp`` at ``cp_rank="exact"``).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before equimol.kernels is imported

import pytest  # noqa: E402
import torch  # noqa: E402
from harness import (  # noqa: E402
    EQUIVARIANCE_TOL,
    REFERENCE_TOL,
    equivariance_error,
    random_orthogonal_matrices,
    spherical_harmonics_features,
)

from equimol.tp import TensorProduct  # noqa: E402

FLOAT32_TOL = 1e-5
IRREPS = ("4x0e + 4x1o + 4x2e", "0e + 1o + 2e", "4x0e + 4x1o + 4x2e")
BACKENDS = [("cp", {"cp_rank": "exact"}), ("gaunt", {"strategy": "grid"})]
NUM_NODES = 7
PER_PATH_CASES = [(torch.float64, False), (torch.float32, True)]


def build(backend, options, dtype=torch.float64, **extra):
    return TensorProduct(*IRREPS, backend=backend, dtype=dtype, internal_weights=False, **options, **extra)


def graph(tp, dtype, seed=0):
    """Node 0 receives 20 edges, node 6 none; features, spherical-harmonic attributes, weights."""
    generator = torch.Generator().manual_seed(seed)
    edge_dst = torch.cat(
        [torch.zeros(20, dtype=torch.long), torch.randint(1, NUM_NODES - 1, (10,), generator=generator)]
    )
    edge_src = torch.randint(0, NUM_NODES, (30,), generator=generator)
    nodes = torch.randn(NUM_NODES, tp.irreps_in1.dim, generator=generator, dtype=torch.float64)
    attrs = spherical_harmonics_features(tp.irreps_in2, 30, seed=seed + 1)
    weight = torch.randn(30, tp.weight_numel, generator=generator, dtype=torch.float64)
    return [t.to(dtype) for t in (nodes, attrs, weight)], edge_src, edge_dst


def tolerance(dtype, expected):
    return REFERENCE_TOL if dtype == torch.float64 else FLOAT32_TOL * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize(
    "backend, options, dtype, deterministic",
    [(*b, dtype, mode) for b in BACKENDS for dtype in (torch.float64, torch.float32) for mode in (False, True)]
    + [("cp", {"cp_rank": "7L2"}, torch.float64, False)]  # a fitted (approximate) rank, not only the exact one
    + [("cp", {"cp_rank": "exact", "weight_sharing": False}, dtype, mode) for dtype, mode in PER_PATH_CASES],
)
def test_triton_kernel_equals_torch_path(backend, options, dtype, deterministic):
    fused = build(backend, options, dtype, kernel="triton", deterministic=deterministic)
    plain = build(backend, options, dtype)
    (nodes, attrs, weight), src, dst = graph(fused, dtype)
    inputs = [t.clone().requires_grad_(True) for t in (nodes, attrs, weight)]
    out = fused.message_passing(*inputs, src, dst, NUM_NODES)
    expected = plain.message_passing(*inputs, src, dst, NUM_NODES)
    assert out.dtype == dtype and out.shape == expected.shape
    assert (out - expected).abs().max().item() <= tolerance(dtype, expected)
    assert out[NUM_NODES - 1].abs().max().item() == 0.0  # the receiver with no edges
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64).to(dtype)
    for a, b in zip(torch.autograd.grad(out, inputs, upstream), torch.autograd.grad(expected, inputs, upstream)):
        assert (a - b).abs().max().item() <= tolerance(dtype, b)


@pytest.mark.parametrize("backend, options", [BACKENDS[0], BACKENDS[1]])
def test_fused_convolution_is_equivariant(backend, options):
    tp = build(backend, options, kernel="triton")
    (nodes, attrs, weight), src, dst = graph(tp, torch.float64, seed=3)

    def convolution(x, y, w):
        return tp.message_passing(x, y, w, src, dst, NUM_NODES)

    error = equivariance_error(
        convolution,
        [tp.irreps_in1, tp.irreps_in2, None],
        tp.irreps_out,
        [nodes, attrs, weight],
        random_orthogonal_matrices(2, seed=4),  # two rotations, then the same with inversion
    )
    assert error <= EQUIVARIANCE_TOL


@pytest.mark.parametrize("backend, options", [BACKENDS[0], BACKENDS[1]])
def test_internal_weights_receive_gradients(backend, options):
    fused = TensorProduct(*IRREPS, backend=backend, dtype=torch.float64, kernel="triton", **options)
    plain = TensorProduct(*IRREPS, backend=backend, dtype=torch.float64, **options)
    plain.load_state_dict(fused.state_dict())
    (nodes, attrs, _), src, dst = graph(fused, torch.float64, seed=5)
    grads = []
    for tp in (fused, plain):
        tp.message_passing(nodes, attrs, None, src, dst, NUM_NODES).pow(2).sum().backward()
        grads.append(tp.weight.grad)
    assert (grads[0] - grads[1]).abs().max().item() <= REFERENCE_TOL * max(1.0, grads[1].abs().max().item())


@pytest.mark.parametrize("backend, options", [BACKENDS[0], BACKENDS[1]])
def test_bad_inputs_are_refused(backend, options):
    tp = build(backend, options, kernel="triton")
    (nodes, attrs, weight), src, dst = graph(tp, torch.float64)
    with pytest.raises(ValueError, match=r"node_features is torch.float32 but the .* is torch.float64"):
        tp.message_passing(nodes.float(), attrs, weight, src, dst, NUM_NODES)
    with pytest.raises(ValueError, match=rf"edge_weight has shape \(30, 2\); expected \[30, {tp.weight_numel}\]"):
        tp.message_passing(nodes, attrs, weight[:, :2], src, dst, NUM_NODES)
    with pytest.raises(ValueError, match=r"edge_weight is torch.float32 but the .* is torch.float64"):
        tp.message_passing(nodes, attrs, weight.float(), src, dst, NUM_NODES)
    with pytest.raises(ValueError, match="internal_weights=False"):
        tp.message_passing(nodes, attrs, None, src, dst, NUM_NODES)
    with pytest.raises(ValueError, match=r"edge_src holds indices in \[7, 7\]; expected 0 <= index < 7"):
        tp.message_passing(nodes, attrs, weight, torch.full_like(src, 7), dst, NUM_NODES)


@pytest.mark.parametrize("backend, options", [BACKENDS[0], BACKENDS[1]])
def test_dtype_change_after_a_call_rebuilds_the_cached_factors(backend, options):
    fused = build(backend, options, kernel="triton")
    plain = build(backend, options)
    (nodes, attrs, weight), src, dst = graph(fused, torch.float64)
    fused.message_passing(nodes, attrs, weight, src, dst, NUM_NODES)  # caches float64 factors
    fused, plain = fused.float(), plain.float()
    inputs = [t.float() for t in (nodes, attrs, weight)]
    out = fused.message_passing(*inputs, src, dst, NUM_NODES)
    expected = plain.message_passing(*inputs, src, dst, NUM_NODES)
    assert out.dtype == torch.float32
    assert (out - expected).abs().max().item() <= tolerance(torch.float32, expected)


def test_strided_edge_index_rows_are_accepted():
    """``edge_index[0]`` of a column-major [2, E] tensor is strided: the kernels must not assume contiguity."""
    fused, plain = build(*BACKENDS[1], kernel="triton"), build(*BACKENDS[1])
    (nodes, attrs, weight), src, dst = graph(fused, torch.float64)
    edge_index = torch.stack([src, dst], dim=1).T  # [2, E] with strides (1, 2)
    assert not edge_index[0].is_contiguous()
    out = fused.message_passing(nodes, attrs, weight, edge_index[0], edge_index[1], NUM_NODES)
    expected = plain.message_passing(nodes, attrs, weight, src, dst, NUM_NODES)
    assert (out - expected).abs().max().item() <= REFERENCE_TOL


@pytest.mark.parametrize(
    "backend, options, irreps",
    [
        ("gaunt", {"strategy": "grid"}, ("3x0e + 3x1o + 3x0e", "0e + 1o + 0e", "3x1o + 3x0e")),  # repeated degrees
        ("gaunt", {"strategy": "edge"}, ("2x2e + 2x0e", "1o + 0e", "2x1o + 2x3o + 2x2e")),  # unsorted, other strategy
        ("cp", {"cp_rank": "exact"}, ("2x1o + 2x0e + 2x1e", "0e + 1o", "2x1e + 2x0e + 2x1o")),  # both parities
    ],
)
def test_irreps_layouts_beyond_the_natural_sequence(backend, options, irreps):
    fused = TensorProduct(
        *irreps, backend=backend, dtype=torch.float64, internal_weights=False, kernel="triton", **options
    )
    plain = TensorProduct(*irreps, backend=backend, dtype=torch.float64, internal_weights=False, **options)
    (nodes, attrs, weight), src, dst = graph(fused, torch.float64, seed=6)
    out = fused.message_passing(nodes, attrs, weight, src, dst, NUM_NODES)
    expected = plain.message_passing(nodes, attrs, weight, src, dst, NUM_NODES)
    assert (out - expected).abs().max().item() <= REFERENCE_TOL
