"""``many_body: cueq`` (cuEquivariance's symmetric contraction): equivariance, finite differences, and
how its parameterization relates to ``many_body: cg`` (see :mod:`equimol.tp.cueq_power`).

Sizes stay at ``lmax = 1, nu = 3`` in the default suite (``lmax = 2, nu = 2`` and the model-level test
are ``slow``): cuEquivariance derives its basis on construction and its PyTorch path evaluates one
einsum per basis path, seconds per call on a loaded 2-core CPU (minutes to build at ``lmax = 2, nu = 3``).
Tolerances: 1e-10 (float64, harness), model symmetry 1e-9 and forces vs central differences
``1e-6 max|F| + 10 eps |E| / h`` as in the other model tests.
"""

from __future__ import annotations

import copy
import functools
import sys

import pytest
import torch
from harness import EQUIVARIANCE_TOL, equivariance_error, random_orthogonal_matrices
from test_model_forces import _coordinates, _fd_tolerance, _finite_difference_forces
from test_model_structures import (  # noqa: F401  (single_thread: autouse fixture)
    build_structure,
    graph_of,
    single_thread,
    tiny_model,
)
from test_model_symmetry import SYMMETRY_TOL, _symmetry_errors

from equimol.nn.linear import natural_irreps
from equimol.nn.many_body import SymmetricProduct, many_body_product

pytest.importorskip("cuequivariance_torch", reason="the cueq extra is part of the test extra")

from equimol.tp.cueq_power import CueqSymmetricContraction  # noqa: E402

SIZES = [(1, 3), pytest.param(2, 2, marks=pytest.mark.slow)]  # (lmax, correlation)


@functools.lru_cache
def _built(channels: int, lmax: int, correlation: int, elements: int) -> CueqSymmetricContraction:
    return CueqSymmetricContraction(natural_irreps(channels, lmax), correlation, num_elements=elements)


def _block(channels: int, lmax: int, correlation: int, elements: int = 2) -> CueqSymmetricContraction:
    """A fresh copy (tests change weights) of a block whose basis is derived once per size."""
    return copy.deepcopy(_built(channels, lmax, correlation, elements))


def _inputs(irreps, count: int = 12, elements: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, irreps.dim, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, elements, (count,), generator=generator)


@pytest.mark.parametrize(("lmax", "correlation"), SIZES)
def test_cueq_many_body_equivariant_under_rotation_and_inversion(lmax, correlation):
    irreps = natural_irreps(2, lmax)
    block = _block(2, lmax, correlation)
    x, elements = _inputs(irreps)
    error = equivariance_error(lambda a: block(a, elements), [irreps], irreps, [x], random_orthogonal_matrices(3))
    assert error <= EQUIVARIANCE_TOL


def test_cueq_many_body_gradcheck():
    irreps = natural_irreps(2, 1)
    block = _block(2, 1, 3)
    x, elements = _inputs(irreps, count=3)
    assert torch.autograd.gradcheck(lambda a: block(a, elements), (x.requires_grad_(True),), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize(("lmax", "correlation"), SIZES)
def test_every_cg_self_product_is_a_cueq_one(lmax, correlation):
    # cueq is linear in W over a complete basis: evaluate one basis function per column, then fit W to a
    # random cg SymmetricProduct (element 0) by least squares. Exact containment: residual ~1e-15.
    channels, count = 2, 40
    irreps = natural_irreps(channels, lmax)
    cg = SymmetricProduct(channels, lmax, correlation, num_elements=1)
    block = _block(channels, lmax, correlation, elements=1)
    x, _ = _inputs(irreps, count=count)
    elements = torch.zeros(count, dtype=torch.long)
    with torch.no_grad():
        target = cg(x, elements)
        columns = []
        for index in range(block.weight.shape[1]):
            block.weight.zero_()
            block.weight[0, index, :] = 1.0
            columns.append(block(x, elements))
    basis = torch.stack(columns, dim=-1)  # [count, dim, n_b]
    worst = 0.0
    for channel in range(channels):
        rows = [
            (
                basis[:, sl].reshape(count, mul, ir.dim, -1)[:, channel],
                target[:, sl].reshape(count, mul, ir.dim)[:, channel],
            )
            for (mul, ir), sl in zip(irreps, irreps.slices())
        ]
        design = torch.cat([b.reshape(-1, b.shape[-1]) for b, _ in rows])
        values = torch.cat([t.reshape(-1) for _, t in rows]).unsqueeze(-1)
        fitted = torch.linalg.lstsq(design, values, driver="gelsd").solution
        worst = max(worst, (design @ fitted - values).abs().max().item())
    assert worst <= 1e-10 * target.abs().max().item()
    assert block.weight.shape[1] > (lmax + 1)  # more functions than cg's first-order weights alone


@pytest.mark.slow  # ~50 s on the loaded 2-core CPU: two blocks' bases, symmetry and finite differences
def test_cueq_many_body_model_is_symmetric_and_forces_match_finite_differences(shared_data):
    model = tiny_model(many_body="cueq")
    assert isinstance(model.many_body[0].product, CueqSymmetricContraction)
    errors = _symmetry_errors(model, graph_of(build_structure("benzene")))
    assert max(errors.values()) <= SYMMETRY_TOL, errors
    graph = graph_of(build_structure("3bpa", shared_data))
    out = model(graph)
    forces = out["forces"].detach()
    coordinates = _coordinates(graph.num_nodes, count=3)
    reference = _finite_difference_forces(model, graph, coordinates)
    computed = torch.stack([forces[atom, axis] for atom, axis in coordinates])
    assert (computed - reference).abs().max() <= _fd_tolerance(forces, float(out["energy"].detach().sum()))


def test_cueq_many_body_without_the_package_names_the_pip_extra(monkeypatch):
    for name in [m for m in sys.modules if m.startswith(("cuequivariance", "equimol.tp.cueq_power"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cuequivariance_torch", None)
    with pytest.raises(ValueError, match=r"pip install 'equimol\[cueq\]'"):
        many_body_product("cueq", 2, 1, 2, 2)
