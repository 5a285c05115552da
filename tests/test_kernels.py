"""The fused factored message kernels (``equimol.kernels``) under the Triton CPU interpreter.

Reference: a plain torch implementation of the same factored product (gather, three matrix
products, index_add), differentiated by autograd.

Tolerances:

* float64: ``REFERENCE_TOL = 1e-10`` max abs (order-one inputs); the kernels differ from the
  reference only in summation order, measured about 1e-14.
* float32: ``FLOAT32_TOL = 1e-5`` times the largest reference magnitude: float32 round-off (6e-8)
  accumulated over the ~100 terms of each sum, with a margin of 2.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before equimol.kernels is imported

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from e3nn import o3  # noqa: E402
from equimol.kernels import fused_message_passing  # noqa: E402
from equimol.kernels.launch import Message, message  # noqa: E402
from equimol.kernels.layout import degree_map, receiver_segments  # noqa: E402
from equimol.kernels.message import prune_configs, segmented_block_edges  # noqa: E402
from harness import REFERENCE_TOL  # noqa: E402

from equimol.tp import FactoredProduct, from_channel_major, to_channel_major  # noqa: E402

FLOAT32_TOL = 1e-5
IRREPS_IN, IRREPS_ATTR, IRREPS_OUT = o3.Irreps("3x0e + 3x1o + 3x2e"), o3.Irreps("0e + 1o"), o3.Irreps("3x0e + 3x1o")
RANK = 7
NUM_NODES = 6


def _expand(weight, irreps):
    if weight is None:
        return 1.0
    if weight.shape[2] == 1:
        return weight
    return weight[:, :, degree_map(irreps, weight.device)[: irreps.dim // irreps[0].mul]]


def reference(product, x, y, w_in, w_attr, w_out, w_mid, src, dst, num_nodes):
    """Torch path of the factored message: ``[num_nodes, irreps_out.dim]``."""
    xc = to_channel_major(x[src], product.irreps_in) * _expand(w_in, product.irreps_in)
    yc = y[:, None, :] * _expand(w_attr, product.irreps_attr)
    terms = (xc @ product.factor_in) * (yc @ product.factor_attr)
    if w_mid is not None:
        terms = terms * w_mid[:, :, product.rank_map]
    z = terms @ product.factor_out
    z = from_channel_major(z * _expand(w_out, product.irreps_out), product.irreps_out)
    return z.new_zeros(num_nodes, z.shape[1]).index_add(0, dst, z)


def make_case(dtype, weights: str, seed: int = 0):
    """A graph with a hub (node 0 receives 24 edges) and a node that receives nothing (the last one)."""
    generator = torch.Generator().manual_seed(seed)
    product = FactoredProduct(
        IRREPS_IN,
        IRREPS_ATTR,
        IRREPS_OUT,
        torch.randn(9, RANK, generator=generator, dtype=torch.float64).to(dtype),
        torch.randn(4, RANK, generator=generator, dtype=torch.float64).to(dtype),
        torch.randn(RANK, 4, generator=generator, dtype=torch.float64).to(dtype),
        rank_map=torch.tensor([0, 1, 2, 0, 1, 2, 0]) if weights == "per_term" else None,
    )
    hub, others = 24, 9
    edge_dst = torch.cat(
        [torch.zeros(hub, dtype=torch.long), torch.randint(1, NUM_NODES - 1, (others,), generator=generator)]
    )
    edge_src = torch.randint(0, NUM_NODES, (hub + others,), generator=generator)
    edges, channels = edge_src.shape[0], 3

    def rand(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)

    x, y = rand(NUM_NODES, IRREPS_IN.dim), rand(edges, IRREPS_ATTR.dim)
    if weights == "shared":  # one weight per channel on the output (cp)
        w = (None, None, rand(edges, channels, 1), None)
    elif weights == "per_term":  # per (channel, slot of the rank-one term) (cp with per-path weights)
        w = (None, None, None, rand(edges, channels, 3))
    else:  # per (channel, irrep) on all three (gaunt)
        w = (rand(edges, channels, 3), rand(edges, channels, 2), rand(edges, channels, 2), None)
    return product, x, y, w, edge_src, edge_dst


def tolerance(dtype, expected):
    return REFERENCE_TOL if dtype == torch.float64 else FLOAT32_TOL * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("weights", ["shared", "per_irrep", "per_term"])
def test_forward_and_gradients_equal_torch(dtype, deterministic, weights):
    product, x, y, w, src, dst = make_case(dtype, weights)
    inputs = [t.clone().requires_grad_(True) if t is not None else None for t in (x, y, *w)]
    leaves = [t for t in inputs if t is not None]

    def torch_path(*args):
        return reference(product, *args, src, dst, NUM_NODES)

    out = fused_message_passing(
        Message(product, *inputs[:2], inputs[2:], src, dst, NUM_NODES), deterministic, torch_path
    )
    expected = torch_path(*inputs)
    assert out.dtype == dtype
    assert (out - expected).abs().max().item() <= tolerance(dtype, expected)
    assert out[NUM_NODES - 1].abs().max().item() == 0.0  # no incoming edge
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(dtype)
    got = torch.autograd.grad(out, leaves, upstream)
    wanted = torch.autograd.grad(expected, leaves, upstream)
    for a, b in zip(got, wanted):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= tolerance(dtype, b)


@pytest.mark.parametrize("deterministic", [False, True])
def test_double_backward_falls_back_to_torch(deterministic):
    """Force training: gradients built with create_graph=True are the torch path's, and differentiable."""
    product, x, y, w, src, dst = make_case(torch.float64, "per_irrep", seed=1)
    inputs = [t.clone().requires_grad_(True) for t in (x, y, *w[:3])]

    def torch_path(*args):
        return reference(product, *args[:5], None, src, dst, NUM_NODES)

    generator = torch.Generator().manual_seed(3)
    upstream = torch.randn(NUM_NODES, IRREPS_OUT.dim, generator=generator, dtype=torch.float64)
    directions = [torch.randn(t.shape, generator=generator, dtype=torch.float64) for t in inputs]

    def second_order(out):
        # a Hessian-vector product of <upstream, out>: what training on forces differentiates
        grads = torch.autograd.grad((out * upstream).sum(), inputs, create_graph=True)
        return torch.autograd.grad(sum((g * d).sum() for g, d in zip(grads, directions)), inputs)

    got = second_order(
        fused_message_passing(Message(product, *inputs[:2], inputs[2:], src, dst, NUM_NODES), deterministic, torch_path)
    )
    wanted = second_order(torch_path(*inputs))
    for a, b in zip(got, wanted):
        assert (a - b).abs().max().item() <= REFERENCE_TOL * max(1.0, b.abs().max().item())


def test_deterministic_mode_is_reproducible_and_matches_atomic():
    product, x, y, w, src, dst = make_case(torch.float64, "shared", seed=2)
    first = message(Message(product, x, y, w[:3], src, dst, NUM_NODES), deterministic=True)
    second = message(Message(product, x, y, w[:3], src, dst, NUM_NODES), deterministic=True)
    atomic = message(Message(product, x, y, w[:3], src, dst, NUM_NODES), deterministic=False)
    assert torch.equal(first, second)
    assert (first - atomic).abs().max().item() <= REFERENCE_TOL


def test_receiver_segments_cover_every_edge_once():
    receivers = torch.tensor([3, 0, 3, 1, 3, 0])
    order, segments = receiver_segments(receivers, num_receivers=5)
    assert segments.tolist() == [0, 2, 3, 3, 6, 6]  # receivers 2 and 4 have empty segments
    assert order.tolist() == [1, 5, 3, 0, 2, 4]  # stable: ties keep edge order


def test_no_edges_gives_zeros():
    product, x, y, w, src, dst = make_case(torch.float64, "shared")
    empty = torch.zeros(0, dtype=torch.long)
    out = message(Message(product, x, y[:0], (None, None, w[2][:0]), empty, empty, NUM_NODES))
    assert out.shape == (NUM_NODES, IRREPS_OUT.dim) and out.abs().max().item() == 0.0


def test_out_of_range_indices_are_refused():
    product, x, y, w, src, dst = make_case(torch.float64, "shared")
    with pytest.raises(ValueError, match=r"edge_dst holds indices in \[6, 6\]; expected 0 <= index < 6"):
        message(Message(product, x, y, w[:3], src, torch.full_like(dst, NUM_NODES), NUM_NODES))
    with pytest.raises(ValueError, match=r"edge_src holds indices in \[-1, -1\]"):
        message(Message(product, x, y, w[:3], torch.full_like(src, -1), dst, NUM_NODES))


def test_bad_shapes_are_refused():
    product, x, y, w, src, dst = make_case(torch.float64, "shared")
    with pytest.raises(ValueError, match=r"node_features has shape \(6, 5\); expected \[V, 27\]"):
        message(Message(product, x[:, :5], y, w[:3], src, dst, NUM_NODES))
    with pytest.raises(ValueError, match=r"edge_attrs has shape \(32, 4\); expected \[33, 4\]"):
        message(Message(product, x, y[1:], w[:3], src, dst, NUM_NODES))
    with pytest.raises(ValueError, match=r"w_out has shape \(33, 3, 5\); expected \[33, 3, n\] with n in \[1, 2\]"):
        message(Message(product, x, y, (None, None, torch.ones(33, 3, 5, dtype=torch.float64)), src, dst, NUM_NODES))


def test_autotune_pruning_keeps_row_blocks_that_fit_tl_dot_and_registers():
    """On a GPU ``tl.dot`` needs >= 16 rows and a [rows, rank] block over REGISTER_BUDGET spills registers."""
    import triton

    configs = [triton.Config({"BLOCK_EDGES": b}, num_warps=w) for b in (1, 2, 4, 8, 16) for w in (4, 8)]

    def kept(**sizes):
        return sorted({c.kwargs["BLOCK_EDGES"] for c in prune_configs(configs, {}, **sizes)})

    assert kept(C_P=8, RANK_P=16) == [2, 4, 8, 16]
    assert kept(C_P=64, RANK_P=256) == [1, 2]  # 64 or 128 rows x 256
    assert kept(C_P=512, RANK_P=512) == [1]  # nothing fits: the smallest legal block
    assert kept(C_P=1, RANK_P=16) == [16]
    assert segmented_block_edges(2) == 8 and segmented_block_edges(64) == 1


def test_refused_with_a_clear_message_without_gpu_or_interpreter():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU even on a GPU machine
    code = (
        "from equimol.tp import TensorProduct\n"
        "TensorProduct('4x0e + 4x1o', '0e + 1o', '4x0e + 4x1o', backend='gaunt', kernel='triton')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "TritonUnavailableError" in result.stderr
    assert "set the environment variable TRITON_INTERPRET=1" in result.stderr
    assert "kernel='torch'" in result.stderr
