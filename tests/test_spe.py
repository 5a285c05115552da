"""SPE: exact and chebyshev modes agree, the degenerate-safe derivative is right, per-structure batching.

Tolerances and why:

* Mode agreement, float64: ``max |PE_exact - PE_cheb| <= 1e-10 max |PE|``. Both evaluate the same
  polynomial ``phi_l(L)``; they differ by the rounding of an eigendecomposition against a degree-6
  recurrence (about 1e-14 measured), so 1e-10 leaves four orders of margin. Float32 (chebyshev in float32,
  exact in float64 then rounded): 1e-4 relative.
* Matrix-function derivative: against plain autograd through the dense polynomial (exact to rounding),
  1e-10 relative, at exactly degenerate Laplacians.
* Finite differences of a non-symmetric functional of the SPE features at degenerate structures: central
  differences, step 1e-5, ``<= 1e-6`` relative (truncation ~1e-10, rounding ~1e-11).
* Force-training gradients and position Hessians (double backward) of exact vs chebyshev: 1e-8
  relative; both are exact second derivatives of the same function (measured ~1e-13).
"""

from __future__ import annotations

import pytest
import torch
from test_model_structures import (  # noqa: F401  (single_thread: autouse fixture)
    DEGENERATE,
    RADIAL_CUTOFF,
    build_structure,
    graph_of,
    single_thread,
    tiny_config,
)
from torch_geometric.data import Batch

from equimol.graph import edge_vectors
from equimol.models import build_model
from equimol.nn.radial import PolynomialEnvelope
from equimol.nn.spe import StablePositionalEncoding, dense_laplacian
from equimol.nn.spe_exact import MatrixFunction, filter_matrices
from equimol.nn.spe_filters import chebyshev_values

SPECIES = [1, 6, 7, 8, 11, 29, 79]


def _spe(mode: str, seed: int = 0) -> StablePositionalEncoding:
    torch.manual_seed(seed)
    return StablePositionalEncoding(
        len(SPECIES), channels=5, num_filters=3, polynomial_degree=6, spectral_scale=16.0, hidden=8, mode=mode
    )


def _spe_inputs(graph, positions=None):
    if positions is not None:
        graph = graph.clone()
        graph.pos = positions
    sender, receiver = graph.edge_index
    batch = getattr(graph, "batch", None)
    vectors = edge_vectors(graph.pos, graph.edge_index, graph.cell_offsets, graph.cell, batch)
    weights = PolynomialEnvelope(RADIAL_CUTOFF)(vectors.norm(dim=-1))
    element = torch.tensor([SPECIES.index(int(z)) for z in graph.atomic_numbers])
    node_graph = batch if batch is not None else torch.zeros(graph.num_nodes, dtype=torch.long)
    num_graphs = graph.cell.view(-1, 3, 3).shape[0]
    return element, weights, sender, receiver, node_graph, num_graphs


def _dense_polynomial(laplacian: torch.Tensor, coefficients: torch.Tensor, scale: float) -> torch.Tensor:
    identity = torch.eye(laplacian.shape[0], dtype=laplacian.dtype)
    scaled = 2.0 * laplacian / scale - identity
    terms = [identity, scaled]
    for _ in range(2, coefficients.shape[1]):
        terms.append(2.0 * scaled @ terms[-1] - terms[-2])
    return torch.einsum("lk,kij->lij", coefficients, torch.stack(terms[: coefficients.shape[1]]))


@pytest.mark.parametrize("name", ["3bpa", "oc20", *DEGENERATE])
def test_exact_and_chebyshev_modes_agree(name, shared_data):
    graph = graph_of(build_structure(name, shared_data))
    exact, chebyshev = _spe("exact"), _spe("chebyshev")
    chebyshev.load_state_dict(exact.state_dict())
    inputs = _spe_inputs(graph)
    reference = exact(*inputs)
    error = (chebyshev(*inputs) - reference).abs().max() / reference.abs().max()
    assert error <= 1e-10, f"{name}: modes differ by {error:.3e}"
    exact32, chebyshev32 = exact.float(), chebyshev.float()
    inputs32 = _spe_inputs(graph_of(build_structure(name, shared_data), torch.float32))
    for module in (exact32, chebyshev32):
        out32 = module(*inputs32)
        assert out32.dtype == torch.float32
        assert (out32.double() - reference).abs().max() / reference.abs().max() <= 1e-4


@pytest.mark.parametrize("name", DEGENERATE)
def test_matrix_function_derivative_at_degenerate_spectra(name):
    graph = graph_of(build_structure(name))
    _, weights, sender, receiver, _, _ = _spe_inputs(graph)
    laplacian = dense_laplacian(weights, sender, receiver, graph.num_nodes)
    generator = torch.Generator().manual_seed(1)
    coefficients = torch.randn(3, 7, dtype=torch.float64, generator=generator)
    cotangent = torch.randn(3, graph.num_nodes, graph.num_nodes, dtype=torch.float64, generator=generator)
    exact_input = laplacian.clone().requires_grad_(True)
    exact_coefficients = coefficients.clone().requires_grad_(True)
    exact = filter_matrices(exact_input, exact_coefficients, 16.0)
    grad_exact = torch.autograd.grad((exact * cotangent).sum(), [exact_input, exact_coefficients])
    dense_input = laplacian.clone().requires_grad_(True)
    dense_coefficients = coefficients.clone().requires_grad_(True)
    dense = _dense_polynomial(dense_input, dense_coefficients, 16.0)
    grad_dense = torch.autograd.grad((dense * cotangent).sum(), [dense_input, dense_coefficients])
    assert (exact - dense).abs().max() <= 1e-10 * dense.abs().max()
    for computed, reference in zip(grad_exact, grad_dense):
        assert torch.isfinite(computed).all()
        assert (computed - reference).abs().max() <= 1e-10 * reference.abs().max()


def test_matrix_function_gradcheck_and_gradgradcheck():
    """gradcheck and gradgradcheck (in L, c and the incoming gradient) on a generic symmetric matrix."""
    generator = torch.Generator().manual_seed(2)
    base = torch.rand(5, 5, dtype=torch.float64, generator=generator)
    adjacency = 0.5 * (base + base.T) * (1 - torch.eye(5, dtype=torch.float64))
    laplacian = torch.diag(adjacency.sum(1)) - adjacency
    coefficients = torch.randn(2, 5, dtype=torch.float64, generator=generator)

    def symmetric_input(matrix, coefficients):
        # eigh reads one triangle: symmetrize so that finite differences see the same function
        return MatrixFunction.apply(0.5 * (matrix + matrix.T), coefficients, 6.0)

    inputs = (laplacian.requires_grad_(), coefficients.requires_grad_())
    assert torch.autograd.gradcheck(symmetric_input, inputs)
    assert torch.autograd.gradgradcheck(symmetric_input, inputs)


@pytest.mark.parametrize("name", DEGENERATE)
def test_matrix_function_second_derivatives_at_degenerate_spectra(name):
    """Double backward (second divided differences) against autograd through the dense polynomial."""
    graph = graph_of(build_structure(name))
    _, weights, sender, receiver, _, _ = _spe_inputs(graph)
    laplacian = dense_laplacian(weights, sender, receiver, graph.num_nodes).detach()
    n = graph.num_nodes
    generator = torch.Generator().manual_seed(6)
    coefficients = torch.randn(2, 7, dtype=torch.float64, generator=generator)
    cotangent = torch.randn(2, n, n, dtype=torch.float64, generator=generator)
    direction = torch.randn(n, n, dtype=torch.float64, generator=generator)
    coefficient_direction = torch.randn(2, 7, dtype=torch.float64, generator=generator)

    def second_derivatives(function):
        matrix = laplacian.clone().requires_grad_(True)
        weights = coefficients.clone().requires_grad_(True)
        value = (function(0.5 * (matrix + matrix.T), weights, 16.0) * cotangent).sum()
        grad_matrix, grad_weights = torch.autograd.grad(value, [matrix, weights], create_graph=True)
        mixed = (grad_matrix * direction).sum() + (grad_weights * coefficient_direction).sum()
        return torch.autograd.grad(mixed, [matrix, weights])

    exact = second_derivatives(filter_matrices)
    dense = second_derivatives(_dense_polynomial)
    for computed, reference in zip(exact, dense):
        assert torch.isfinite(computed).all()
        assert (computed - reference).abs().max() <= 1e-10 * reference.abs().max()


@pytest.mark.parametrize("mode", ["exact", "chebyshev"])
@pytest.mark.parametrize("name", DEGENERATE)
def test_spe_position_gradient_matches_finite_differences(name, mode):
    """A functional that breaks the symmetry, so its gradient at the degenerate structure is not zero."""
    graph = graph_of(build_structure(name))
    spe = _spe(mode)
    generator = torch.Generator().manual_seed(3)
    readout = torch.randn(graph.num_nodes, 5, dtype=torch.float64, generator=generator)

    def functional(positions):
        return (spe(*_spe_inputs(graph, positions)) * readout).sum()

    positions = graph.pos.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(functional(positions), positions)
    assert torch.isfinite(gradient).all() and gradient.abs().max() > 1e-3
    step = 1e-5
    reference = torch.zeros_like(gradient)
    with torch.no_grad():
        for atom in range(min(graph.num_nodes, 4)):
            for axis in range(3):
                plus, minus = graph.pos.clone(), graph.pos.clone()
                plus[atom, axis] += step
                minus[atom, axis] -= step
                reference[atom, axis] = (functional(plus) - functional(minus)) / (2 * step)
    checked = slice(0, min(graph.num_nodes, 4))
    error = (gradient[checked] - reference[checked]).abs().max() / gradient.abs().max()
    assert error <= 1e-6, f"{name}/{mode}: {error:.3e}"


@pytest.mark.parametrize("name", ["cu_fcc", "square", "ch4"])
def test_force_training_gradients_agree_between_modes(name):
    """Gradient of a force loss (double backward) is finite and the same in both modes."""
    graph = graph_of(build_structure(name))
    gradients = {}
    for mode in ("exact", "chebyshev"):
        model = build_model(tiny_config(spe={"mode": mode}))
        model.train()
        out = model(graph)
        loss = (out["forces"] ** 2).sum() + out["energy"].sum() ** 2
        loss.backward()
        gradients[mode] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert gradients["exact"].keys() == gradients["chebyshev"].keys()
    assert any(name.startswith("spe.") for name in gradients["exact"])
    for key, exact in gradients["exact"].items():
        chebyshev = gradients["chebyshev"][key]
        assert torch.isfinite(exact).all(), key
        scale = max(float(exact.abs().max()), 1e-12)
        assert (exact - chebyshev).abs().max() <= 1e-8 * max(scale, 1.0), key


@pytest.mark.parametrize("mode", ["exact", "chebyshev"])
def test_spe_is_per_structure_and_permutation_equivariant(mode):
    structures = [build_structure("ch4"), build_structure("cu_fcc"), build_structure("square")]
    graphs = [graph_of(atoms) for atoms in structures]
    spe = _spe(mode)
    separate = torch.cat([spe(*_spe_inputs(graph)) for graph in graphs])
    batched = spe(*_spe_inputs(Batch.from_data_list(graphs)))
    assert (batched - separate).abs().max() <= 1e-12 * separate.abs().max()
    atoms = build_structure("benzene")
    permutation = torch.randperm(len(atoms), generator=torch.Generator().manual_seed(4))
    original = spe(*_spe_inputs(graph_of(atoms)))
    permuted = spe(*_spe_inputs(graph_of(atoms[permutation.numpy()])))
    assert (permuted - original[permutation]).abs().max() <= 1e-12 * original.abs().max()


def test_spe_bad_inputs():
    with pytest.raises(ValueError, match="spe mode 'eigen'"):
        StablePositionalEncoding(2, 4, mode="eigen")
    with pytest.raises(ValueError, match="spectral_scale"):
        StablePositionalEncoding(2, 4, spectral_scale=0.0)
    with pytest.raises(ValueError, match="float64"):
        filter_matrices(torch.eye(3, dtype=torch.float32), torch.ones(1, 2, dtype=torch.float32), 1.0)


def test_chebyshev_values_are_chebyshev_polynomials():
    t = torch.linspace(-1, 1, 11, dtype=torch.float64)
    values = chebyshev_values(t, 5)
    reference = torch.cos(torch.arange(6, dtype=torch.float64).unsqueeze(1) * torch.arccos(t))
    assert (values - reference).abs().max() <= 1e-13


@pytest.mark.parametrize("name", ["square", "ch4"])
def test_position_hessian_agrees_between_modes(name):
    """Hessian-vector products of the energy (phonons, second-order optimizers) are the same in both modes."""
    graph = graph_of(build_structure(name))
    direction = torch.randn(graph.pos.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    products = {}
    for mode in ("exact", "chebyshev"):
        model = build_model(tiny_config(spe={"mode": mode})).train()  # train: forces keep their graph
        moved = graph.clone()
        moved.pos = graph.pos.clone().requires_grad_(True)
        forces = model(moved)["forces"]
        (products[mode],) = torch.autograd.grad((forces * direction).sum(), moved.pos)
    scale = products["chebyshev"].abs().max()
    assert torch.isfinite(products["exact"]).all() and scale > 0
    assert (products["exact"] - products["chebyshev"]).abs().max() <= 1e-8 * scale


def test_modes_agree_on_a_larger_periodic_crystal():
    """108-atom rattled fcc Cu (3x3x3 cubic cells, 1296 edges): many periodic images, no symmetry left."""
    import ase.build

    atoms = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=9)
    graph = graph_of(atoms)
    exact, chebyshev = _spe("exact"), _spe("chebyshev")
    chebyshev.load_state_dict(exact.state_dict())
    inputs = _spe_inputs(graph)
    reference = exact(*inputs)
    assert (chebyshev(*inputs) - reference).abs().max() <= 1e-10 * reference.abs().max()


def test_modes_agree_with_periodic_self_images():
    """A 2-atom fcc cell: most edges join an atom to its own images (``sender == receiver``)."""
    import ase.build

    atoms = ase.build.bulk("Cu", "fcc", a=3.61).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=10)
    graph = graph_of(atoms)
    sender, receiver = graph.edge_index
    assert (sender == receiver).any() and (sender != receiver).any()
    exact, chebyshev = _spe("exact"), _spe("chebyshev")
    chebyshev.load_state_dict(exact.state_dict())
    inputs = _spe_inputs(graph)
    reference = exact(*inputs)
    assert (chebyshev(*inputs) - reference).abs().max() <= 1e-10 * reference.abs().max()
