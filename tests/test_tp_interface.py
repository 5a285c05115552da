"""The TP interface: registry, argument errors, dtype handling, normalization and message passing."""

import pytest
import torch
from harness import REFERENCE_TOL, random_inputs, spherical_harmonics_features

from equimol.tp import TensorProduct, available_backends

# Irreps with parity (-1)^l so that every backend (gaunt included) can serve them.
NATURAL = ("8x0e + 8x1o + 8x2e", "0e + 1o + 2e", "8x0e + 8x1o + 8x2e")


def test_available_backends_lists_cg():
    assert "cg" in available_backends()
    assert available_backends() == sorted(available_backends())


def test_unknown_backend_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown tensor-product backend 'nope'.*cg"):
        TensorProduct(*NATURAL, backend="nope")


def test_unparsable_irreps_names_argument():
    with pytest.raises(ValueError, match=r"irreps_in2='0e \+ 1x' is not a valid irreps"):
        TensorProduct("4x0e", "0e + 1x", "4x0e")


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match=r"does not accept option\(s\) \['cp_rank'\]"):
        TensorProduct(*NATURAL, backend="cg", cp_rank=3)


@pytest.mark.parametrize(
    "irreps, message",
    [
        (("4x0e + 2x1o", "0e", "4x0e"), "different multiplicities"),
        (("4x0e", "2x0e", "4x0e"), "one copy of each irrep"),
        (("4x0e", "0e", "3x0e"), "has 3 channels"),
    ],
)
def test_irreps_the_uvu_product_cannot_serve(irreps, message):
    with pytest.raises(ValueError, match=message):
        TensorProduct(*irreps)


def test_mismatched_shapes_are_reported():
    tp = TensorProduct(*NATURAL, dtype=torch.float64)
    x1, x2, weight = random_inputs(tp, count=4)
    with pytest.raises(ValueError, match=r"x1 has shape \(4, 5\); expected \[N, 72\]"):
        tp(x1[:, :5], x2, weight)
    with pytest.raises(ValueError, match=r"x2 has shape"):
        tp(x1, x2[:, :4], weight)
    with pytest.raises(ValueError, match=r"x1 has 4 rows but x2 has 3"):
        tp(x1, x2[:3], weight)
    with pytest.raises(ValueError, match=rf"weight has shape \(4, 3\); expected \[4, {tp.weight_numel}\]"):
        tp(x1, x2, weight[:, :3])


def test_missing_weight_without_internal_weights():
    tp = TensorProduct(*NATURAL, internal_weights=False, dtype=torch.float64)
    x1, x2, _ = random_inputs(tp, count=2)
    with pytest.raises(ValueError, match="internal_weights=False"):
        tp(x1, x2)


def test_internal_and_shared_weights_equal_expanded_per_sample_weights():
    tp = TensorProduct(*NATURAL, dtype=torch.float64)
    x1, x2, _ = random_inputs(tp, count=3)
    per_sample = tp.weight.detach().expand(3, -1)
    assert torch.allclose(tp(x1, x2), tp(x1, x2, per_sample), atol=0, rtol=0)
    assert torch.allclose(tp(x1, x2, tp.weight.detach()), tp(x1, x2, per_sample), atol=0, rtol=0)


@pytest.mark.parametrize("backend", available_backends())
def test_dtype_follows_module_and_global_default_is_untouched(backend):
    before = torch.get_default_dtype()
    tp = TensorProduct(*NATURAL, backend=backend, dtype="float64")
    assert tp.weight.dtype == torch.float64
    tp = tp.float()
    assert all(b.dtype in (torch.float32, torch.complex64) for b in tp.buffers() if b.is_floating_point())
    x1, x2, weight = random_inputs(tp, count=2)
    assert tp(x1.float(), x2.float(), weight.float()).dtype == torch.float32
    assert torch.get_default_dtype() == before


@pytest.mark.parametrize("backend", available_backends())
def test_unit_variance_inputs_give_order_one_output_variance(backend):
    torch.manual_seed(0)
    irreps = ("16x0e + 16x1o + 16x2e + 16x3o", "0e + 1o + 2e + 3o", "16x0e + 16x1o + 16x2e + 16x3o")
    tp = TensorProduct(*irreps, backend=backend, dtype=torch.float64)
    count = 2000
    x1 = torch.randn(count, tp.irreps_in1.dim, dtype=torch.float64)
    x2 = spherical_harmonics_features(tp.irreps_in2, count)
    weight = torch.randn(count, tp.weight_numel, dtype=torch.float64)
    out = tp(x1, x2, weight)
    for (_, ir), sl in zip(tp.irreps_out, tp.irreps_out.slices()):
        variance = out[:, sl].pow(2).mean().item()
        assert 0.2 < variance < 5.0, f"{backend}: output {ir} has variance {variance:.3f}"


@pytest.mark.parametrize("backend", available_backends())
def test_message_passing_equals_gather_product_scatter(backend):
    tp = TensorProduct(*NATURAL, backend=backend, internal_weights=False, dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    num_nodes, num_edges = 7, 30
    nodes = torch.randn(num_nodes, tp.irreps_in1.dim, generator=generator, dtype=torch.float64)
    edge_src = torch.randint(0, num_nodes, (num_edges,), generator=generator)
    edge_dst = torch.randint(0, num_nodes - 1, (num_edges,), generator=generator)  # node 6 receives nothing
    edge_attrs = spherical_harmonics_features(tp.irreps_in2, num_edges, seed=2)
    weight = torch.randn(num_edges, tp.weight_numel, generator=generator, dtype=torch.float64)
    out = tp.message_passing(nodes, edge_attrs, weight, edge_src, edge_dst, num_nodes)
    expected = torch.zeros_like(out)
    for e in range(num_edges):
        expected[edge_dst[e]] += tp(nodes[edge_src[e], None], edge_attrs[e, None], weight[e, None])[0]
    assert (out - expected).abs().max() <= REFERENCE_TOL
    assert out[num_nodes - 1].abs().max() == 0.0


def test_unknown_kernel_name_is_rejected():
    with pytest.raises(ValueError, match=r"kernel='cuda' is not known; expected one of \['torch', 'triton'\]"):
        TensorProduct(*NATURAL, kernel="cuda")


def test_base_options_reach_every_backend():
    for backend in available_backends():
        tp = TensorProduct(*NATURAL, backend=backend, kernel="torch", deterministic=True, internal_weights=False)
        assert tp.kernel == "torch" and tp.deterministic and tp.weight is None


def test_shared_constant_registered_twice_is_restored_in_float64():
    # A backend may register one cached tensor under two names; both must come back exact.
    from equimol.tp.cg import CGTensorProduct

    class Twice(CGTensorProduct):
        def _finish_construction(self):
            constant = torch.tensor([1.0 / 3.0], dtype=torch.float64)
            self.register_buffer("first", constant)
            self.register_buffer("second", constant)
            super()._finish_construction()

    module = Twice(*NATURAL, dtype=torch.float32).double()
    assert module.first.item() == module.second.item() == 1.0 / 3.0
