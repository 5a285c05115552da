"""Factored forms (equimol.tp.factored): a toy backend gets the fused kernel by providing one; the
backends' factored forms reproduce their products; the Gaunt grid matrices agree with an independent
quadrature; the layering rules (no backend name in kernels/, no import of datasets/train in the core).

Tolerances: float64 ``REFERENCE_TOL = 1e-10`` (the kernel and the contractions differ from the torch
path only in summation order, measured about 1e-14); float32 ``1e-5`` relative (round-off of ~100-term sums).
"""

from __future__ import annotations

import ast
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from e3nn import o3
from harness import REFERENCE_TOL

from equimol.tp import (
    FactoredProduct,
    TensorProduct,
    TensorProductBackend,
    WeightGroup,
    factored_backends,
    from_channel_major,
    to_channel_major,
)
from equimol.tp.factored import factored_form_of
from equimol.tp.gaunt import gaunt_fan_in

ROOT = Path(__file__).resolve().parents[1]
RANK, SLOTS = 5, 3


class ToyFactored(TensorProductBackend):
    """A product defined by random factors (not equivariant): per-irrep input weights and per-slot term weights.

    Weights ``[N, C * 2 + 3 * C]``: ``w_in`` ``[C, 2]`` (channel-major), then ``w_mid`` ``[3, C]`` (slot-major).
    Defined here only: the fused kernel must serve it with no code outside this class.
    """

    name = "toy_factored"

    def __init__(self, irreps_in1, irreps_in2, irreps_out, **base_options) -> None:
        super().__init__(irreps_in1, irreps_in2, irreps_out, **base_options)
        generator = torch.Generator().manual_seed(3)
        dims = [irreps.dim // irreps[0].mul for irreps in (self.irreps_in1, self.irreps_in2, self.irreps_out)]
        self.register_buffer("A", torch.randn(dims[0], RANK, generator=generator, dtype=torch.float64))
        self.register_buffer("B", torch.randn(dims[1], RANK, generator=generator, dtype=torch.float64))
        self.register_buffer("Cm", torch.randn(RANK, dims[2], generator=generator, dtype=torch.float64))
        self.register_buffer("rank_map", torch.tensor([0, 2, 1, 2, 0]))
        self.register_buffer(
            "irrep_of_component", torch.cat([torch.full((ir.dim,), i) for i, (_, ir) in enumerate(self.irreps_in1)])
        )
        self.weight_numel = self.channels * (len(self.irreps_in1) + SLOTS)
        self._finish_construction()

    def _product(self, x1, x2, weight):
        count, channels = x1.shape[0], self.channels
        w_in = weight[:, : channels * len(self.irreps_in1)].reshape(count, channels, -1)
        w_mid = weight[:, channels * len(self.irreps_in1) :].reshape(count, SLOTS, channels).transpose(1, 2)
        x = to_channel_major(x1, self.irreps_in1) * w_in[:, :, self.irrep_of_component]
        terms = (x @ self.A) * (x2 @ self.B)[:, None, :] * w_mid[:, :, self.rank_map]
        return from_channel_major(terms @ self.Cm, self.irreps_out).reshape(count, -1)

    def factored_form(self) -> FactoredProduct:
        split = (WeightGroup("in", len(self.irreps_in1)), WeightGroup("mid", SLOTS, slot_major=True))
        return FactoredProduct(
            self.irreps_in1, self.irreps_in2, self.irreps_out, self.A, self.B, self.Cm, self.rank_map, split
        )


TOY_IRREPS = ("3x0e + 3x1o", "0e + 1o", "3x0e + 3x1o")


def message_case(tp, dtype, seed=0, nodes=6, edges=25):
    generator = torch.Generator().manual_seed(seed)
    src = torch.randint(0, nodes, (edges,), generator=generator)
    dst = torch.randint(0, nodes - 1, (edges,), generator=generator)  # the last node receives nothing
    x = torch.randn(nodes, tp.irreps_in1.dim, generator=generator, dtype=torch.float64).to(dtype)
    y = torch.randn(edges, tp.irreps_in2.dim, generator=generator, dtype=torch.float64).to(dtype)
    w = torch.randn(edges, tp.weight_numel, generator=generator, dtype=torch.float64).to(dtype)
    return (x, y, w), src, dst, nodes


@pytest.mark.parametrize(
    "dtype, deterministic", [(torch.float64, False), (torch.float64, True), (torch.float32, False)]
)
def test_a_toy_backend_gets_the_fused_kernel_from_its_factored_form(dtype, deterministic):
    fused = ToyFactored(*TOY_IRREPS, dtype=dtype, internal_weights=False, kernel="triton", deterministic=deterministic)
    plain = ToyFactored(*TOY_IRREPS, dtype=dtype, internal_weights=False)
    (x, y, w), src, dst, nodes = message_case(fused, dtype)
    inputs = [t.clone().requires_grad_(True) for t in (x, y, w)]
    out = fused.message_passing(*inputs, src, dst, nodes)
    expected = plain.message_passing(*inputs, src, dst, nodes)
    tolerance = REFERENCE_TOL if dtype == torch.float64 else 1e-5 * max(1.0, expected.abs().max().item())
    assert (out - expected).abs().max().item() <= tolerance
    assert out[nodes - 1].abs().max().item() == 0.0 and expected.abs().max().item() > 1.0
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    for a, b in zip(torch.autograd.grad(out, inputs, upstream), torch.autograd.grad(expected, inputs, upstream)):
        assert (a - b).abs().max().item() <= tolerance * 10


def test_a_backend_without_factored_form_is_refused_by_the_fused_kernel():
    with pytest.raises(ValueError, match=r"backend 'cg' has none: use kernel='torch'"):
        TensorProduct(*TOY_IRREPS, backend="cg", kernel="triton")
    assert factored_backends() == ["cp", "gaunt"]


def contract(product: FactoredProduct, x, y, weight):
    """The factored product in plain torch (no kernel): ``[N, irreps_out.dim]``."""
    w_in, w_attr, w_out, w_mid = product.split_weight(weight)

    def expand(w, irreps):
        if w is None:
            return 1.0
        index = torch.cat([torch.full((ir.dim,), i) for i, (_, ir) in enumerate(irreps)])
        return w if w.shape[2] == 1 else w[:, :, index]

    terms = (to_channel_major(x, product.irreps_in) * expand(w_in, product.irreps_in)) @ product.factor_in.double()
    terms = terms * ((y[:, None, :] * expand(w_attr, product.irreps_attr)) @ product.factor_attr.double())
    if w_mid is not None:
        terms = terms * w_mid[:, :, product.rank_map]
    z = (terms @ product.factor_out.double()) * expand(w_out, product.irreps_out)
    return from_channel_major(z, product.irreps_out).reshape(x.shape[0], -1)


@pytest.mark.parametrize(
    "backend, options",
    [
        ("cp", {"cp_rank": "exact"}),
        ("cp", {"cp_rank": "exact", "weight_sharing": False}),
        ("gaunt", {"strategy": "grid"}),
        ("gaunt", {"strategy": "edge"}),
    ],
)
def test_factored_forms_reproduce_the_products(backend, options):
    irreps = ("3x0e + 3x1o + 3x2e", "0e + 1o + 2e", "3x0e + 3x1o + 3x2e")
    tp = TensorProduct(*irreps, backend=backend, dtype=torch.float64, internal_weights=False, **options)
    product = factored_form_of(tp)
    assert product is factored_form_of(tp)  # cached while the buffers are unchanged
    generator = torch.Generator().manual_seed(2)
    x, y = (torch.randn(4, d, generator=generator, dtype=torch.float64) for d in (tp.irreps_in1.dim, tp.irreps_in2.dim))
    weight = torch.randn(4, tp.weight_numel, generator=generator, dtype=torch.float64)
    assert product.weight_numel == tp.weight_numel
    assert torch.equal(product.join_weight(*product.split_weight(weight)), weight)
    assert (contract(product, x, y, weight) - tp(x, y, weight)).abs().max().item() <= REFERENCE_TOL


def z_polar_grid_factors(degrees1, degrees2, degrees_out):
    """The Gaunt grid matrices from an independent quadrature (Gauss-Legendre in cos(theta) about z)."""
    total = max(degrees1) + max(degrees2) + max(degrees_out)
    n_theta, n_phi = total // 2 + 1, total + 1
    cos_theta, gauss = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(n_theta))
    phi = torch.arange(n_phi, dtype=torch.float64) * (2 * math.pi / n_phi)
    sin_theta = (1 - cos_theta**2).sqrt()
    points = torch.stack(
        [sin_theta[:, None] * phi.cos(), sin_theta[:, None] * phi.sin(), cos_theta[:, None].expand(-1, n_phi)], -1
    ).reshape(-1, 3)
    weights = (gauss[:, None] * (2 * math.pi / n_phi)).expand(-1, n_phi).reshape(-1)

    def harmonics(degrees):
        return torch.cat(
            [o3.spherical_harmonics(l, points, normalize=True, normalization="integral") for l in degrees], -1
        ).T

    scale = torch.tensor(
        [math.sqrt(4 * math.pi / f) if (f := gaunt_fan_in(degrees1, degrees2, l)) > 0 else 0.0 for l in degrees_out],
        dtype=torch.float64,
    )[torch.cat([torch.full((2 * l + 1,), i) for i, l in enumerate(degrees_out)])]
    return harmonics(degrees1), harmonics(degrees2), weights[:, None] * harmonics(degrees_out).T * scale


@pytest.mark.parametrize(
    "irreps", [("2x0e + 2x1o + 2x2e", "0e + 1o + 2e", "2x0e + 2x1o + 2x2e"), ("2x2e + 2x0e", "1o", "2x1o + 2x3o")]
)
def test_gaunt_grid_factors_match_an_independent_quadrature(irreps):
    """Two exact quadratures (y- and z-polar grids) of the same integral: equal trilinear tensors."""
    tp = TensorProduct(*irreps, backend="gaunt", dtype=torch.float64, strategy="grid")
    product = factored_form_of(tp)
    degrees = [[ir.l for _, ir in group] for group in (tp.irreps_in1, tp.irreps_in2, tp.irreps_out)]
    ours = torch.einsum("ig,jg,gk->ijk", product.factor_in, product.factor_attr, product.factor_out)
    theirs = torch.einsum("ig,jg,gk->ijk", *z_polar_grid_factors(*degrees))
    assert ours.abs().max().item() > 0.1
    assert (ours - theirs).abs().max().item() <= 1e-12


def test_factored_product_rejects_inconsistent_parts():
    irreps = [o3.Irreps(s) for s in TOY_IRREPS]
    a, b, c = torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"factor_out has shape \(3, 4\); expected \[2, 4\]"):
        FactoredProduct(*irreps, a, b, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="needs rank_map"):
        FactoredProduct(*irreps, a, b, c, weight_split=(WeightGroup("mid", 2),))
    with pytest.raises(ValueError, match=r"'out' weights have 3 slots; expected 1 or 2"):
        FactoredProduct(*irreps, a, b, c, weight_split=(WeightGroup("out", 3),))


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


def test_layering_core_kernels_and_backends():
    """The core never imports datasets or train (only its CLI may); tp/ never imports the kernels;
    kernels/ imports only the TP interface and the layout helpers of ours and names no backend."""
    for path in (ROOT / "equimol").rglob("*.py"):
        if "cli" in path.relative_to(ROOT / "equimol").parts:
            continue
        bad = {m for m in imported_modules(path) if m.startswith(("equimol.datasets", "equimol.train"))}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
    for path in (ROOT / "equimol" / "tp").glob("*.py"):
        assert not {m for m in imported_modules(path) if m.startswith("equimol.kernels")}, path
        text = path.read_text()
        assert "import equimol.kernels" not in text and 'import_module("equimol.kernels' not in text, path
    backend_names = {"cg", "cp", "gaunt", "cueq"}
    for path in (ROOT / "kernels").glob("*.py"):
        ours = {m for m in imported_modules(path) if m.startswith("equimol.") and not m.startswith("equimol.kernels")}
        allowed = ("equimol.tp.factored", "equimol.tp.irreps")  # the interface; the one home of layout conversions
        assert all(m.startswith(allowed) for m in ours), f"{path.name} imports {sorted(ours)}"
        words = {w.strip("`'\".,:;()") for w in path.read_text().replace("_", " ").split()}
        assert not words & backend_names, f"{path.name} names backend(s) {sorted(words & backend_names)}"


def test_the_kernel_is_found_through_its_entry_point():
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="equimol.message_kernels") if e.name == "triton"]
    assert entry.value == "equimol.kernels"
    assert os.environ.get("TRITON_INTERPRET") or torch.cuda.is_available()
