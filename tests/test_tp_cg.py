"""Backend ``cg``: equivariance, gradients and agreement with a direct e3nn reference (float64), for both
strategies (``e3nn``: e3nn's generated product; ``edge``: the stacked per-sample coupling)."""

import pytest
import torch
from e3nn import o3
from harness import EQUIVARIANCE_TOL, REFERENCE_TOL, check_gradients, random_inputs, tp_equivariance_error

from equimol.tp import TensorProduct
from equimol.utils.dtype import float64_construction

MIXED_PARITY = [
    ("3x0e + 3x1o", "0e + 1o", "3x0e + 3x1o + 3x1e"),
    ("2x0e + 2x1o + 2x1e + 2x2e", "0e + 1o + 2e", "2x0e + 2x0o + 2x1o + 2x1e + 2x2e + 2x2o"),
    (
        "2x0o + 2x2e + 2x3o + 2x4e",
        "1x0e + 1x1o + 1x2e + 1x3o + 1x4e",
        "2x0e + 2x1o + 2x2e + 2x3o + 2x4e + 2x4o",
    ),
]


STRATEGIES = ["e3nn", "edge"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("irreps", MIXED_PARITY)
def test_cg_equivariant_under_rotation_and_inversion(irreps, strategy):
    tp = TensorProduct(*irreps, backend="cg", strategy=strategy, dtype=torch.float64)
    assert tp_equivariance_error(tp) <= EQUIVARIANCE_TOL


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cg_float64_exact_after_double_from_float32(strategy):
    # Built in float32 then converted: the float64 copies of the coefficients must come back.
    tp = TensorProduct(*MIXED_PARITY[2], backend="cg", strategy=strategy, dtype=torch.float32).double()
    assert tp_equivariance_error(tp) <= EQUIVARIANCE_TOL
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cg_matches_direct_e3nn_reference(strategy):
    irreps_in1, irreps_in2, irreps_out = MIXED_PARITY[1]
    tp = TensorProduct(irreps_in1, irreps_in2, irreps_out, backend="cg", strategy=strategy, dtype=torch.float64)
    x1, x2, weight = random_inputs(tp, count=5)
    # Independent reference: the sum over paths of sqrt(2 l3 + 1) C x1 x2 w / sqrt(fan-in).
    in1, in2, out = o3.Irreps(irreps_in1), o3.Irreps(irreps_in2), o3.Irreps(irreps_out)
    channels = in1[0].mul
    weight = weight.view(5, len(tp.paths), channels)
    fan_in = {i: sum(p.i_out == i for p in tp.paths) for i in range(len(out))}
    expected = torch.zeros(5, out.dim, dtype=torch.float64)
    for k, path in enumerate(tp.paths):
        with float64_construction():
            coupling = o3.wigner_3j(path.l1, path.l2, path.l3)
        a = x1[:, in1.slices()[path.i1]].view(5, channels, -1)
        b = x2[:, in2.slices()[path.i2]]
        value = torch.einsum("ijk,nui,nj->nuk", coupling, a, b) * weight[:, k, :, None]
        value = value * (2 * path.l3 + 1) ** 0.5 / fan_in[path.i_out] ** 0.5
        expected[:, out.slices()[path.i_out]] += value.reshape(5, -1)
    assert (tp(x1, x2, weight.reshape(5, -1)) - expected).abs().max() <= REFERENCE_TOL


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cg_paths_include_parity_odd_products(strategy):
    tp = TensorProduct("4x1o", "1o", "4x0e + 4x1e + 4x1o + 4x2e", backend="cg", strategy=strategy, dtype=torch.float64)
    assert {(p.l1, p.l2, p.l3) for p in tp.paths} == {(1, 1, 0), (1, 1, 1), (1, 1, 2)}
    assert tp.weight_numel == 3 * 4
    x1, x2, weight = random_inputs(tp)
    out = tp(x1, x2, weight)
    assert out[:, 4 + 12 : 4 + 24].abs().max() == 0.0  # 1o x 1o has no 1o output


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("irreps", MIXED_PARITY[:2])
def test_cg_gradcheck_and_gradgradcheck(irreps, strategy):
    check_gradients(TensorProduct(*irreps, backend="cg", strategy=strategy, dtype=torch.float64))


@pytest.mark.parametrize(
    "irreps", [MIXED_PARITY[2], ("32x0e + 32x1o", "0e + 1o + 2e + 3o", "32x0e + 32x1o + 32x2e + 32x3o")]
)
def test_cg_edge_equals_e3nn_strategy(irreps):
    # The main-job message shape (32 channels, SH to L = 3) and the L = 4 mixed-parity one; float64 round-off.
    tp_e3nn, tp_edge = (TensorProduct(*irreps, backend="cg", strategy=s, dtype=torch.float64) for s in STRATEGIES)
    x1, x2, weight = random_inputs(tp_e3nn, count=7)
    expected = tp_e3nn(x1, x2, weight)
    assert (tp_edge(x1, x2, weight) - expected).abs().max() <= REFERENCE_TOL * expected.abs().max()


def test_cg_auto_strategy_and_unknown_strategy():
    assert TensorProduct("2x0e + 2x1o", "0e + 1o", "2x0e + 2x1o", backend="cg").strategy == "edge"
    with pytest.raises(ValueError, match="strategy='fast' is not one of"):
        TensorProduct("2x0e", "0e", "2x0e", backend="cg", strategy="fast")


@pytest.mark.parametrize(
    ("backend", "saved", "loaded"), [("cg", "e3nn", "edge"), ("cg", "edge", "e3nn"), ("gaunt", "grid", "edge")]
)
def test_state_dict_of_one_strategy_loads_into_another(backend, saved, loaded):
    # Model files written before a strategy became the default hold that strategy's constant buffers.
    irreps = ("3x0e + 3x1o", "0e + 1o + 2e", "3x0e + 3x1o + 3x2e")
    writer = TensorProduct(*irreps, backend=backend, strategy=saved, dtype=torch.float64)
    reader = TensorProduct(*irreps, backend=backend, strategy=loaded, dtype=torch.float64)
    reader.load_state_dict(writer.state_dict(), strict=True)
    x1, x2, _ = random_inputs(writer, count=4)
    assert torch.equal(reader.weight, writer.weight)
    assert (reader(x1, x2) - writer(x1, x2)).abs().max() <= REFERENCE_TOL


def test_cg_edge_message_passing_equals_e3nn_with_gradients():
    # edge converts layouts per node around the gather and the sum; values and gradients must not change.
    irreps = ("3x0e + 3x1o + 3x2e", "0e + 1o + 2e", "3x0e + 3x1o + 3x2e")
    tp_e3nn, tp_edge = (TensorProduct(*irreps, backend="cg", strategy=s, dtype=torch.float64) for s in STRATEGIES)
    generator = torch.Generator().manual_seed(3)
    nodes, edges = 5, 17
    features = torch.randn(nodes, tp_edge.irreps_in1.dim, dtype=torch.float64, generator=generator, requires_grad=True)
    attrs = torch.randn(edges, tp_edge.irreps_in2.dim, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(edges, tp_edge.weight_numel, dtype=torch.float64, generator=generator, requires_grad=True)
    src, dst = torch.randint(0, nodes, (2, edges), generator=generator)
    results = []
    for tp in (tp_e3nn, tp_edge):
        out = tp.message_passing(features, attrs, weight, src, dst, nodes)
        results.append((out, *torch.autograd.grad(out.square().sum(), (features, attrs, weight))))
    for expected, got in zip(*results):
        assert (got - expected).abs().max() <= REFERENCE_TOL * expected.abs().max()
