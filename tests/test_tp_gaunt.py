"""The ``gaunt`` backend against the exact Gaunt reference, the ``cg`` paths, rotations and inversion.

Tolerances (float64): ``REFERENCE_TOL = EQUIVARIANCE_TOL = 1e-10`` max abs (see the harness; both
strategies reach about 1e-14 at L = 8). Float32: relative error ``1e-5`` (max abs error over
max abs value) up to L = 6, the issue's bound: float32 round-off (6e-8) accumulated over a few
hundred terms per output stays one to two orders of magnitude below it.
"""

import pytest
import torch
from harness import (
    EQUIVARIANCE_TOL,
    REFERENCE_TOL,
    check_gradients,
    gaunt_reference,
    random_inputs,
    tp_equivariance_error,
)

from equimol.tp import TensorProduct, available_backends, get_backend
from equimol.tp.gaunt import GauntTensorProduct, three_j_zero_squared

STRATEGIES = ("grid", "edge")
FLOAT32_RELATIVE_TOL = 1e-5


def natural_irreps(lmax: int, channels: int) -> str:
    return " + ".join(f"{channels}x{l}{'eo'[l % 2]}" for l in range(lmax + 1))


def convolution_irreps(lmax: int, channels: int) -> tuple[str, str, str]:
    return natural_irreps(lmax, channels), natural_irreps(lmax, 1), natural_irreps(lmax, channels)


_REFERENCES: dict[tuple, tuple] = {}


def reference_case(irreps: tuple[str, str, str], count: int = 3, seed: int = 0):
    """Inputs and ``gaunt_reference`` output, computed once per irreps (the reference is slow at L = 8)."""
    key = (irreps, count, seed)
    if key not in _REFERENCES:
        tp = TensorProduct(*irreps, backend="gaunt", strategy="grid", dtype=torch.float64)
        x1, x2, weight = random_inputs(tp, count, seed)
        _REFERENCES[key] = (x1, x2, weight, gaunt_reference(x1, x2, weight, *irreps))
    return _REFERENCES[key]


def test_registered():
    assert "gaunt" in available_backends()
    assert get_backend("gaunt") is GauntTensorProduct


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("lmax", range(1, 9))
def test_matches_exact_reference_float64(strategy, lmax):
    irreps = convolution_irreps(lmax, channels=2)
    x1, x2, weight, expected = reference_case(irreps)
    tp = TensorProduct(*irreps, backend="gaunt", strategy=strategy, dtype=torch.float64)
    assert tp.weight_numel == 2 * 3 * (lmax + 1)
    assert (tp(x1, x2, weight) - expected).abs().max().item() <= REFERENCE_TOL


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(
    "irreps",
    [
        # repeated, unordered and missing degrees; output degrees no path reaches (5e is zero)
        ("3x2e + 3x0e + 3x2e + 3x3o", "1o + 2e", "3x1o + 3x3o + 3x0e + 3x5o + 3x1o"),
        ("2x4e", "0e + 0e + 4e", "2x0e + 2x8e + 2x9o"),
        ("2x1o", "3o", "2x6e + 2x2e"),
    ],
)
def test_general_irreps_match_reference(strategy, irreps):
    x1, x2, weight, expected = reference_case(irreps)
    tp = TensorProduct(*irreps, backend="gaunt", strategy=strategy, dtype=torch.float64)
    assert (tp(x1, x2, weight) - expected).abs().max().item() <= REFERENCE_TOL


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_float32_relative_error_up_to_l6(strategy):
    for lmax in range(1, 7):
        irreps = convolution_irreps(lmax, channels=2)
        x1, x2, weight, expected = reference_case(irreps)
        tp = TensorProduct(*irreps, backend="gaunt", strategy=strategy, dtype=torch.float32)
        out = tp(x1.float(), x2.float(), weight.float()).double()
        relative = ((out - expected).abs().max() / expected.abs().max()).item()
        assert relative <= FLOAT32_RELATIVE_TOL, f"L={lmax}: relative error {relative:.2e}"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_double_after_float32_construction_is_float64_exact(strategy):
    irreps = convolution_irreps(3, channels=2)
    x1, x2, weight, expected = reference_case(irreps)
    tp = TensorProduct(*irreps, backend="gaunt", strategy=strategy, dtype=torch.float32).double()
    assert (tp(x1, x2, weight) - expected).abs().max().item() <= REFERENCE_TOL


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_unit_weight_paths_are_multiples_of_cg(strategy):
    """With unit weights one path of ``gaunt`` is ``c`` times the same path of ``cg``.

    Both are normalized to unit output variance, so ``|c| = 1``: the Gaunt coefficient is the CG
    coefficient times ``sqrt((2l1+1)(2l2+1)(2l3+1)/4pi) |(l1 l2 l3; 0 0 0)|`` and the two
    normalizations divide exactly that factor out. Only the sign may differ.
    """
    checked = 0
    for l1 in range(4):
        for l2 in range(4):
            for l3 in range(abs(l1 - l2), l1 + l2 + 1):
                if (l1 + l2 + l3) % 2:
                    continue
                irreps = (f"2x{l1}{'eo'[l1 % 2]}", f"{l2}{'eo'[l2 % 2]}", f"2x{l3}{'eo'[l3 % 2]}")
                gaunt = TensorProduct(*irreps, backend="gaunt", strategy=strategy, dtype=torch.float64)
                cg = TensorProduct(*irreps, backend="cg", dtype=torch.float64)
                x1, x2, _ = random_inputs(gaunt, count=4, seed=l1 + 10 * l2 + 100 * l3)
                out_gaunt = gaunt(x1, x2, torch.ones(gaunt.weight_numel, dtype=torch.float64))
                out_cg = cg(x1, x2, torch.ones(cg.weight_numel, dtype=torch.float64))
                ratio = (out_gaunt * out_cg).sum() / out_cg.pow(2).sum()
                assert abs(abs(ratio.item()) - 1.0) <= REFERENCE_TOL, (l1, l2, l3, ratio.item())
                assert (out_gaunt - ratio * out_cg).abs().max().item() <= REFERENCE_TOL, (l1, l2, l3)
                checked += 1
    assert checked == 30


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("lmax", [2, 5])
def test_equivariant_under_rotation_and_inversion(strategy, lmax):
    tp = TensorProduct(*convolution_irreps(lmax, channels=2), backend="gaunt", strategy=strategy, dtype=torch.float64)
    assert tp_equivariance_error(tp, count=4, rotations=3) <= EQUIVARIANCE_TOL


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gradcheck_and_gradgradcheck_l2(strategy):
    # One channel keeps the numerical Jacobians small; the channel dimension is a plain batch dimension.
    tp = TensorProduct(*convolution_irreps(2, channels=1), backend="gaunt", strategy=strategy, dtype=torch.float64)
    check_gradients(tp, count=2)


@pytest.mark.parametrize(
    "irreps", [("3x0e + 3x1o", "0e + 1o", "3x0e + 3x1o"), ("2x2e + 2x0e + 2x2e", "1o + 2e", "2x1o + 2x3o")]
)
def test_gradients_with_several_channels_and_repeated_degrees(irreps):
    """Several channels, unordered and repeated degrees: the edge backward's per-irrep weight sums and layouts."""
    tp = TensorProduct(*irreps, backend="gaunt", strategy="edge", dtype=torch.float64)
    check_gradients(tp, count=2)
    grid = TensorProduct(*irreps, backend="gaunt", strategy="grid", dtype=torch.float64)
    x1, x2, weight = (t.requires_grad_(True) for t in random_inputs(tp, 5, seed=3))
    grad_out = torch.randn(5, tp.irreps_out.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    edge_grads = torch.autograd.grad(tp(x1, x2, weight), (x1, x2, weight), grad_out)
    grid_grads = torch.autograd.grad(grid(x1, x2, weight), (x1, x2, weight), grad_out)
    for mine, reference in zip(edge_grads, grid_grads):
        assert (mine - reference).abs().max().item() <= REFERENCE_TOL


def test_strategies_agree_on_internal_weights():
    irreps = convolution_irreps(3, channels=4)
    grid = TensorProduct(*irreps, backend="gaunt", strategy="grid", dtype=torch.float64)
    x1, x2, _ = random_inputs(grid, count=5)
    edge = TensorProduct(*irreps, backend="gaunt", strategy="edge", dtype=torch.float64)
    edge.load_state_dict(grid.state_dict(), strict=False)
    assert (grid(x1, x2) - edge(x1, x2)).abs().max().item() <= REFERENCE_TOL


def test_auto_strategy_resolves_to_a_concrete_one():
    tp = TensorProduct(*convolution_irreps(2, channels=2), backend="gaunt", dtype=torch.float64)
    assert tp.strategy == GauntTensorProduct.choose(2, 2, 2) == "edge"
    assert GauntTensorProduct.choose(6, 6, 6) == "grid"
    assert f"strategy={tp.strategy!r}" in tp.extra_repr()


@pytest.mark.parametrize(
    "irreps, bad",
    [
        (("4x0e + 4x1e", "0e", "4x1e"), "1e"),
        (("4x0e", "0o", "4x0o"), "0o"),
        (("4x0e", "1o", "4x1o + 4x2o"), "2o"),
    ],
)
def test_unnatural_parity_is_refused_pointing_to_cg(irreps, bad):
    with pytest.raises(ValueError, match=rf"contains {bad}.*parity \(-1\)\^l.*use backend='cg'"):
        TensorProduct(*irreps, backend="gaunt")


def test_unknown_strategy_is_named():
    with pytest.raises(ValueError, match=r"strategy='spectral' is not one of \('auto', 'grid', 'edge'\)"):
        TensorProduct(*convolution_irreps(1, 2), backend="gaunt", strategy="spectral")


def test_three_j_closed_form_matches_e3nn():
    from e3nn import o3

    from equimol.utils.dtype import float64_construction

    for l1, l2, l3 in [(1, 1, 2), (2, 3, 3), (4, 2, 6), (3, 3, 0), (1, 2, 2)]:
        with float64_construction():
            wigner = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        # e3nn's 3j and the standard symbol both have unit Frobenius norm, and the real and complex
        # bases share the m = 0 functions, so the (0 0 0) entries agree up to sign.
        assert abs(wigner[l1, l2, l3].item() ** 2 - three_j_zero_squared(l1, l2, l3)) <= 1e-14


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_empty_batch_gives_empty_output_with_gradients(strategy):
    tp = TensorProduct(*convolution_irreps(2, channels=2), backend="gaunt", strategy=strategy, dtype=torch.float64)
    x1 = torch.zeros(0, tp.irreps_in1.dim, dtype=torch.float64, requires_grad=True)
    x2 = torch.zeros(0, tp.irreps_in2.dim, dtype=torch.float64)
    out = tp(x1, x2)
    assert out.shape == (0, tp.irreps_out.dim)
    out.sum().backward()
    assert x1.grad.shape == x1.shape and tp.weight.grad.abs().max().item() == 0.0
