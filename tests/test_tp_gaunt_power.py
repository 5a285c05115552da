"""The many-body Gaunt self-product against repeated exact Gaunt products (``gaunt_reference``).

Tolerances: ``REFERENCE_TOL = EQUIVARIANCE_TOL = 1e-10`` max abs in float64 (see the harness).
"""

import math

import pytest
import torch
from e3nn import o3
from harness import (
    EQUIVARIANCE_TOL,
    REFERENCE_TOL,
    equivariance_error,
    gaunt_magnitude,
    gaunt_reference,
    random_orthogonal_matrices,
)

from equimol.manybody.gaunt import GauntSelfProduct


def natural(lmax: int, channels: int) -> o3.Irreps:
    return o3.Irreps(" + ".join(f"{channels}x{l}{'eo'[l % 2]}" for l in range(lmax + 1)))


def raw_gaunt(a: torch.Tensor, b: torch.Tensor, irreps_a: o3.Irreps, irreps_b: o3.Irreps, irreps_out: o3.Irreps):
    """``(1/4pi) int f_a f_b Y^c`` per sample: ``gaunt_reference`` with unit weights, its ``n_l3`` divided out."""
    ones = torch.ones(a.shape[0], len(irreps_a) + len(irreps_b) + len(irreps_out), dtype=torch.float64)
    out = gaunt_reference(a, b, ones, irreps_a, irreps_b, irreps_out)
    blocks = []
    for (_, ir3), sl in zip(irreps_out, irreps_out.slices()):
        fan_in = sum(
            4 * math.pi * gaunt_magnitude(ir1.l, ir2.l, ir3.l) ** 2 / (2 * ir3.l + 1)
            for _, ir1 in irreps_a
            for _, ir2 in irreps_b
        )
        blocks.append(out[:, sl] * math.sqrt(fan_in))
    return torch.cat(blocks, dim=-1)


def composed_power(x: torch.Tensor, irreps: o3.Irreps, nu: int, irreps_out: o3.Irreps) -> torch.Tensor:
    """``x^nu`` as repeated exact products; intermediate results keep every degree (no truncation)."""
    lmax = max(ir.l for _, ir in irreps)
    power, irreps_power = x, irreps
    for order in range(2, nu + 1):
        target = irreps_out if order == nu else natural(order * lmax, 1)
        power, irreps_power = raw_gaunt(power, x, irreps_power, irreps, target), target
    return power


STRATEGIES = ("grid",)  # the one strategy ("auto" is the same), kept as a parameter for the test ids


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("lmax", [1, 2, 3, 4])
@pytest.mark.parametrize("nu", [2, 3])
def test_powers_match_composed_exact_gaunt_products(lmax, nu, strategy):
    channels, count = 2, 2
    module = GauntSelfProduct(natural(lmax, channels), correlation=nu, strategy=strategy, dtype=torch.float64)
    generator = torch.Generator().manual_seed(lmax + 10 * nu)
    x = torch.randn(count, module.irreps_in.dim, generator=generator, dtype=torch.float64)
    powers = module.powers(x, module.weight_in.detach().expand(count, -1, -1))  # [N, nu, C, D]
    per_channel = x.reshape(count, -1)
    # Channel u of every sample as its own one-channel sample.
    blocks = [
        per_channel[:, sl].reshape(count, channels, ir.dim)
        for (_, ir), sl in zip(module.irreps_in, module.irreps_in.slices())
    ]
    single = torch.cat(blocks, dim=-1).reshape(count * channels, -1)
    irreps_single = natural(lmax, 1)
    expected = composed_power(single, irreps_single, nu, irreps_single) / (4 * math.pi) ** ((nu - 1) / 2)
    got = powers[:, nu - 1].reshape(count * channels, -1)
    assert (got - expected).abs().max().item() <= REFERENCE_TOL


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fourth_power_by_repeated_squaring_matches_composition(strategy):
    module = GauntSelfProduct(
        natural(2, 1), correlation=4, irreps_out="1x0e + 1x2e + 1x3o", strategy=strategy, dtype=torch.float64
    )
    x = torch.randn(3, module.irreps_in.dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    powers = module.powers(x, module.weight_in.detach().expand(3, -1, -1))[:, 3, 0]
    expected = composed_power(x, natural(2, 1), 4, o3.Irreps("1x0e + 1x2e + 1x3o")) / (4 * math.pi) ** 1.5
    assert (powers - expected).abs().max().item() <= REFERENCE_TOL


def test_forward_is_the_weighted_sum_of_normalized_powers():
    module = GauntSelfProduct(natural(2, 3), correlation=3, irreps_out="3x0e + 3x1o", dtype=torch.float64)
    x = torch.randn(4, module.irreps_in.dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    powers = module.powers(x, module.weight_in.detach().expand(4, -1, -1))  # [N, nu, C, D_out]
    scale = torch.tensor([(4 * math.pi) ** ((nu - 1) / 2) for nu in (1, 2, 3)], dtype=torch.float64)
    weights = module.weight_out.detach()[0] * (module.normalization * scale[:, None])[:, None, :]  # [nu, C, n_out]
    per_component = weights[..., [0, 1, 1, 1]]  # irreps_out components: 0e, 1o (3)
    expected = (powers * per_component).sum(dim=1)  # [N, C, D_out]
    expected = torch.cat([expected[..., 0], expected[..., 1:].flatten(1)], dim=-1)
    assert (module(x) - expected).abs().max().item() <= REFERENCE_TOL


@pytest.mark.parametrize("correlation", [1, 2, 3, 4])
def test_unit_variance_inputs_give_order_one_outputs(correlation):
    """``n_{nu,l3}`` is exact for unit-normal inputs; 2400 samples give the mean square to ~10%.

    Measured mean squares lie in 0.90..1.13 (x^4 has heavy tails); the bounds leave room for seeds.
    """
    module = GauntSelfProduct(natural(2, 8), correlation=correlation, dtype=torch.float64)
    generator = torch.Generator().manual_seed(correlation)
    x = torch.randn(300, module.irreps_in.dim, generator=generator, dtype=torch.float64)
    powers = (
        module.powers(x, module.weight_in.detach().expand(300, -1, -1))
        * module.output_scale[None, :, None, :][..., module.irrep_of_component_out]
    )
    for nu in range(correlation):
        for (_, ir), sl in zip(natural(2, 1), natural(2, 1).slices()):
            mean_square = powers[:, nu, :, sl].pow(2).mean().item()
            assert 0.6 < mean_square < 1.6, f"nu={nu + 1}, {ir}: mean square {mean_square:.3f}"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_equivariant_under_rotation_and_inversion(strategy):
    module = GauntSelfProduct(natural(3, 2), correlation=3, num_elements=3, strategy=strategy, dtype=torch.float64)
    x = torch.randn(5, module.irreps_in.dim, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    elements = torch.tensor([0, 2, 1, 2, 0])
    error = equivariance_error(
        lambda features: module(features, elements),
        [module.irreps_in],
        module.irreps_out,
        [x],
        random_orthogonal_matrices(3, seed=1),
    )
    assert error <= EQUIVARIANCE_TOL


def test_per_element_weights_select_rows():
    module = GauntSelfProduct(natural(2, 2), correlation=2, num_elements=3, dtype=torch.float64)
    with torch.no_grad():
        module.weight_in.normal_()
    x = torch.randn(4, module.irreps_in.dim, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    elements = torch.tensor([2, 0, 2, 1])
    out = module(x, elements)
    for row, element in enumerate(elements.tolist()):
        single = GauntSelfProduct(natural(2, 2), correlation=2, dtype=torch.float64)
        with torch.no_grad():
            single.weight_in.copy_(module.weight_in[element : element + 1])
            single.weight_out.copy_(module.weight_out[element : element + 1])
        assert (single(x[row : row + 1]) - out[row : row + 1]).abs().max().item() <= REFERENCE_TOL


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gradcheck_and_gradgradcheck(strategy):
    module = GauntSelfProduct(natural(1, 1), correlation=3, strategy=strategy, dtype=torch.float64)
    x = torch.randn(2, module.irreps_in.dim, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(module, (x,), eps=1e-6, atol=1e-7, rtol=1e-6)
    assert torch.autograd.gradgradcheck(module, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_float32_module_and_exact_double(strategy):
    module = GauntSelfProduct(natural(3, 2), correlation=3, strategy=strategy, dtype=torch.float32)
    x = torch.randn(3, module.irreps_in.dim, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert module(x.float()).dtype == torch.float32
    reference = GauntSelfProduct(natural(3, 2), correlation=3, strategy=strategy, dtype=torch.float64)
    reference.load_state_dict(module.double().state_dict())
    assert (module(x) - reference(x)).abs().max().item() <= REFERENCE_TOL


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"irreps": "4x0e + 4x1e", "correlation": 2}, r"irreps contains 1e.*parity \(-1\)\^l"),
        ({"irreps": "4x0e", "correlation": 2, "irreps_out": "4x0o"}, r"irreps_out contains 0o"),
        ({"irreps": "4x0e", "correlation": 5}, r"correlation=5 must be an integer from 1 to 4"),
        ({"irreps": "4x0e", "correlation": 2, "num_elements": 0}, r"num_elements=0 must be a positive integer"),
        ({"irreps": "4x0e", "correlation": 2, "irreps_out": "3x0e"}, r"must have the 4 channels"),
        ({"irreps": "4x0e + 2x1o", "correlation": 2}, r"different multiplicities"),
        ({"irreps": "4x0e", "correlation": 2, "strategy": "spectral"}, r"strategy='spectral' is not one of"),
        ({"irreps": "4x0e", "correlation": 2, "strategy": "fft"}, r"strategy='fft' is not one of"),
    ],
)
def test_bad_construction_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GauntSelfProduct(**kwargs)


def test_bad_forward_arguments():
    module = GauntSelfProduct(natural(1, 2), correlation=2, num_elements=2, dtype=torch.float64)
    x = torch.randn(3, module.irreps_in.dim, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"element_index \[N\] is required"):
        module(x)
    with pytest.raises(ValueError, match=r"element_index values must lie in 0..1"):
        module(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"expected \[3\] int64"):
        module(x, torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"x has shape \(3, 5\); expected \[N, 8\]"):
        module(x[:, :5], torch.tensor([0, 1, 1]))
    shared = GauntSelfProduct(natural(1, 2), correlation=2, dtype=torch.float64)
    with pytest.raises(ValueError, match="num_elements=None"):
        shared(x, torch.tensor([0, 1, 1]))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_empty_batch(strategy):
    module = GauntSelfProduct(natural(2, 2), correlation=3, num_elements=2, strategy=strategy, dtype=torch.float64)
    x = torch.zeros(0, module.irreps_in.dim, dtype=torch.float64, requires_grad=True)
    out = module(x, torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, module.irreps_out.dim)
    out.sum().backward()
    assert x.grad.shape == x.shape
