"""The ``cp`` backend: exactness at the exact rank, parity zeros, gradients, weights and errors.

Tolerances: ``REFERENCE_TOL = EQUIVARIANCE_TOL = 1e-10`` (harness) for the exact rank, whose
factors reproduce the coupling tensor to about 1e-15 relative (slice-wise SVDs).
"""

import pytest
import torch
from harness import EQUIVARIANCE_TOL, REFERENCE_TOL, check_gradients, random_inputs, tp_equivariance_error

from equimol.tp import TensorProduct

# Mixed parities: 1e is not a spherical-harmonic parity, 1o x 1o reaches 0e, 1e and 2e only.
MIXED = ("3x0e + 3x1o + 3x1e + 3x2e", "0e + 1o + 1e", "3x0e + 3x1o + 3x1e + 3x2e + 3x2o")
NATURAL = ("4x0e + 4x1o + 4x2e", "0e + 1o + 2e", "4x0e + 4x1o + 4x2e")


def build(irreps, backend="cp", **options):
    return TensorProduct(*irreps, backend=backend, dtype=torch.float64, **options)


def ones(tp, count):
    return torch.ones(count, tp.weight_numel, dtype=torch.float64)


@pytest.mark.parametrize("strategy", ["factors", "edge"])
@pytest.mark.parametrize("irreps", [MIXED, NATURAL])
def test_exact_rank_equals_cg_with_unit_weights(irreps, strategy):
    cp, cg = build(irreps, cp_rank="exact", strategy=strategy), build(irreps, backend="cg")
    assert cp.strategy == strategy
    x1, x2, _ = random_inputs(cp, count=7)
    assert cp.fit_exact and cp.relative_error < 1e-13
    assert (cp(x1, x2, ones(cp, 7)) - cg(x1, x2, ones(cg, 7))).abs().max() <= REFERENCE_TOL


def test_exact_rank_per_path_equals_cg_with_any_weights():
    cp, cg = build(MIXED, cp_rank="exact", weight_sharing=False), build(MIXED, backend="cg")
    assert cp.weight_numel == cg.weight_numel == len(cp.paths) * 3
    x1, x2, weight = random_inputs(cp, count=7)
    assert (cp(x1, x2, weight) - cg(x1, x2, weight)).abs().max() <= REFERENCE_TOL


def test_shared_weight_scales_each_channel():
    tp = build(NATURAL, cp_rank="exact")
    assert tp.weight_numel == tp.channels == 4
    x1, x2, _ = random_inputs(tp, count=5)
    weight = torch.randn(5, 4, dtype=torch.float64)
    scaled = tp(x1, x2, weight)
    unit = tp(x1, x2, ones(tp, 5))
    assert scaled.shape == unit.shape == (5, tp.irreps_out.dim)
    for (mul, ir), sl in zip(tp.irreps_out, tp.irreps_out.slices()):  # layout "mul_ir": check per irrep block
        block, reference = scaled[:, sl].view(5, mul, ir.dim), unit[:, sl].view(5, mul, ir.dim)
        assert reference.abs().max() > 1e-3  # a block of zeros would pass trivially
        assert torch.allclose(block, reference * weight[:, :, None], rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize(
    "weight_sharing, cp_rank, strategy",
    [
        (True, "exact", "factors"),
        (True, "7L2", "factors"),
        (True, 6, "factors"),
        (True, "exact", "edge"),
        (True, "7L2", "edge"),
        (True, 6, "edge"),
        (False, "exact", "factors"),
        (False, 20, "factors"),
    ],
)
def test_parity_forbidden_outputs_are_exactly_zero(weight_sharing, cp_rank, strategy):
    """1o x 1o has no 1o or 2o part and 1e x 0e no odd part: exact zeros at any rank, not small numbers.

    Ranks 6 (shared) and 20 (per path: one term for each of the 20 paths) are far too low for accuracy (a warning
    says so) and still keep the zeros.
    """
    with pytest.warns(RuntimeWarning, match="above fit_tolerance") if cp_rank in (6, 20) else _no_warning():
        tp = build(MIXED, cp_rank=cp_rank, weight_sharing=weight_sharing, strategy=strategy)
    generator = torch.Generator().manual_seed(3)
    count = 5
    x1 = torch.zeros(count, tp.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.zeros(count, tp.irreps_in2.dim, dtype=torch.float64)
    x1[:, tp.irreps_in1.slices()[1]] = torch.randn(count, 9, generator=generator, dtype=torch.float64)  # 3x1o
    x2[:, tp.irreps_in2.slices()[1]] = torch.randn(count, 3, generator=generator, dtype=torch.float64)  # 1o
    weight = torch.randn(count, tp.weight_numel, generator=generator, dtype=torch.float64)
    out = tp(x1, x2, weight)
    slices = tp.irreps_out.slices()
    assert torch.equal(out[:, slices[1]], torch.zeros_like(out[:, slices[1]]))  # 1o
    assert torch.equal(out[:, slices[4]], torch.zeros_like(out[:, slices[4]]))  # 2o
    assert out[:, slices[2]].abs().max() > 0  # 1e: the cross product is kept (TDN would lose its parity)
    # even x even: no odd output
    x1 = torch.zeros_like(x1)
    x1[:, tp.irreps_in1.slices()[2]] = 1.0  # 3x1e
    x2 = torch.zeros_like(x2)
    x2[:, tp.irreps_in2.slices()[0]] = 1.0  # 0e
    out = tp(x1, x2, weight)
    for index in (1, 4):
        assert torch.equal(out[:, slices[index]], torch.zeros_like(out[:, slices[index]]))


class _no_warning:
    """Context that fails on any RuntimeWarning (a fit that misses its tolerance)."""

    def __enter__(self):
        import warnings

        self._context = warnings.catch_warnings()
        self._context.__enter__()
        warnings.simplefilter("error", RuntimeWarning)
        return self

    def __exit__(self, *args):
        return self._context.__exit__(*args)


@pytest.mark.parametrize("weight_sharing, strategy", [(True, "factors"), (True, "edge"), (False, "factors")])
def test_exact_rank_is_equivariant_under_rotations_and_inversion(weight_sharing, strategy):
    tp = build(MIXED, cp_rank="exact", weight_sharing=weight_sharing, strategy=strategy)
    assert tp_equivariance_error(tp) <= EQUIVARIANCE_TOL


@pytest.mark.filterwarnings("ignore:cp backend:RuntimeWarning")  # rank 5 is inexact on purpose: generic factors
@pytest.mark.parametrize(
    "options",
    [
        {"cp_rank": 5, "strategy": "factors"},
        {"cp_rank": 5, "strategy": "edge"},
        {"cp_rank": "exact", "weight_sharing": False},
    ],
)
def test_gradients_float64(options):
    irreps = ("2x0e + 2x1o", "0e + 1o + 1e", "2x0e + 2x1o + 2x1e")
    check_gradients(build(irreps, **options), count=2)


def test_rank_at_or_above_exact_becomes_the_exact_rank():
    exact = build(NATURAL, cp_rank="exact")
    larger = build(NATURAL, cp_rank=10_000)
    assert larger.rank == exact.rank == 55 and larger.fit_exact
    assert build(NATURAL).rank == 28  # 7 L^2 at L = 2


@pytest.mark.parametrize("strategy", ["factors", "edge"])
def test_float32_module_is_close_to_float64(strategy):
    tp = build(NATURAL, strategy=strategy)
    x1, x2, weight = random_inputs(tp, count=6)
    reference = tp(x1, x2, weight)
    # float32 rounding of order-one sums over R = 28 terms: about 1e-6 absolute
    assert (tp.float()(x1.float(), x2.float(), weight.float()).double() - reference).abs().max() < 1e-4
    assert (tp.double()(x1, x2, weight) - reference).abs().max() == 0.0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"cp_rank": 0}, r"cp_rank=0 must be a positive int"),
        ({"cp_rank": "8L"}, r"cp_rank='8L' must be a positive int, '7L2'"),
        ({"cp_rank": 2.5}, r"cp_rank=2.5 must be"),
        ({"cp_rank": True}, r"cp_rank=True must be"),
        ({"fit_tolerance": 0.0}, r"fit_tolerance=0.0 must be a number in \(0, 1\)"),
        ({"fit_tolerance": 2}, r"fit_tolerance=2 must be"),
        ({"weight_sharing": "yes"}, r"weight_sharing='yes' must be True or False"),
        ({"cp_rank": 3, "weight_sharing": False}, r"cp_rank=3 is below the number of paths \(\d+\)"),
        ({"strategy": "dense"}, r"strategy='dense' is not one of \('auto', 'factors', 'edge'\)"),
        ({"strategy": "edge", "weight_sharing": False}, r"strategy='edge' needs weight_sharing=True"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        build(NATURAL, **options)


def test_irreps_without_any_path_are_refused():
    with pytest.raises(ValueError, match=r"backend 'cp' cannot serve .*no parity- and triangle-allowed path"):
        build(("2x0e", "1o", "2x0e"))


def test_strategies_agree_at_a_fitted_rank():
    """Both evaluation orders compute the same parity-masked rank-R product (to float64 round-off)."""
    factors, edge = build(NATURAL, strategy="factors"), build(NATURAL, strategy="edge")
    x1, x2, weight = random_inputs(factors, count=6)
    assert (factors(x1, x2, weight) - edge(x1, x2, weight)).abs().max() <= REFERENCE_TOL


def test_auto_strategy_counts_multiply_adds():
    from equimol.tp.cp import choose_cp_strategy

    assert (
        build(NATURAL).strategy == "edge"
        and build(NATURAL, weight_sharing=False, cp_rank="exact").strategy == "factors"
    )
    assert choose_cp_strategy(49, 49, 49, 32, 252, True) == "edge"  # L = 6, 32 channels
    assert choose_cp_strategy(49, 49, 49, 1, 252, True) == "factors"  # one channel: the matrix is not shared


def test_default_rank_reports_its_fit():
    tp = build(NATURAL)
    assert 0 < tp.relative_error <= 1e-6  # the default fit_tolerance is reached at L = 2
    assert "rank=28" in repr(tp) and "weights=shared" in repr(tp)
