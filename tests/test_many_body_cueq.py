"""``many_body: cueq`` (cuEquivariance's symmetric contraction): equivariance, finite differences, and
how its parameterization relates to ``many_body: cg`` (see :mod:`equimol.manybody.cueq`).

Sizes stay at ``lmax = 1, nu = 3`` in the default suite (``lmax = 2, nu = 2`` and the model-level test
are ``slow``). The dense evaluation equals cuEquivariance's own ``SymmetricContraction`` (its PyTorch
method, same weights) to 1e-12 relative in float64; the contraction's paths come from the disk cache
on a second build (cuEquivariance not asked again) and a damaged cache file is derived again.
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

from equimol.manybody import many_body_product
from equimol.manybody.cg import SymmetricProduct
from equimol.nn.linear import natural_irreps

pytest.importorskip("cuequivariance_torch", reason="the cueq extra is part of the test extra")

import equimol.manybody.cueq as cueq_power  # noqa: E402
from equimol.manybody.cueq import CueqSymmetricContraction  # noqa: E402

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
    from equimol.manybody import registry

    for name in [m for m in sys.modules if m.startswith(("cuequivariance", "equimol.manybody.cueq"))]:
        monkeypatch.delitem(sys.modules, name)
    # as in a process that never imported the kind: it is registered when its module is first imported
    monkeypatch.setattr(registry, "_KINDS", {k: v for k, v in registry._KINDS.items() if k != "cueq"})
    for name in ("cuequivariance", "cuequivariance_torch"):  # the cueq extra
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ValueError, match=r"pip install 'equimol\[cueq\]'"):
        many_body_product("cueq", 2, 1, 2, 2)


@pytest.mark.parametrize("method", ["dense", "naive"])
@pytest.mark.parametrize(("lmax", "correlation"), [(1, 3), (2, 2)])
def test_evaluation_equals_cuequivariance_symmetric_contraction(lmax, correlation, method):
    import cuequivariance as cue
    import cuequivariance_torch as cuet

    irreps = natural_irreps(3, lmax)
    block = CueqSymmetricContraction(irreps, correlation, num_elements=2, method=method)
    cue_irreps = cue.Irreps(cue.O3, str(irreps))
    reference = cuet.SymmetricContraction(
        cue_irreps, cue_irreps, correlation, num_elements=2, layout=cue.mul_ir, dtype=torch.float64, method="naive"
    )
    with torch.no_grad():
        reference.weight.copy_(block.weight)
    x, elements = _inputs(irreps, count=9)
    expected = reference(x, elements)
    assert (block(x, elements) - expected).abs().max() <= 1e-12 * expected.abs().max()


def _clear_memory_caches():
    for function in (cueq_power.contraction_paths, cueq_power.dense_tables, cueq_power.contraction_polynomial):
        function.cache_clear()


def test_second_build_reads_the_contraction_from_the_disk_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("EQUIMOL_CACHE_DIR", str(tmp_path))
    _clear_memory_caches()
    irreps = natural_irreps(2, 1)
    first = CueqSymmetricContraction(irreps, 3, num_elements=2)
    assert len(list((tmp_path / "cueq_contraction").glob("*.npz"))) == 1
    _clear_memory_caches()

    def refuse(*args, **kwargs):
        raise AssertionError("cuEquivariance asked to derive the contraction again")

    monkeypatch.setattr(cueq_power.cue.descriptors, "symmetric_contraction", refuse)
    second = CueqSymmetricContraction(irreps, 3, num_elements=2)
    second.load_state_dict(first.state_dict())
    x, elements = _inputs(irreps)
    assert torch.equal(first(x, elements), second(x, elements))
    _clear_memory_caches()


@pytest.mark.parametrize("damage", ["truncate", "stale_key", "checksum"])
def test_a_damaged_cache_file_is_derived_again(monkeypatch, tmp_path, damage):
    import numpy as np

    monkeypatch.setenv("EQUIMOL_CACHE_DIR", str(tmp_path))
    _clear_memory_caches()
    irreps = natural_irreps(2, 1)
    reference = cueq_power.contraction_paths(cueq_power.unit_irreps(str(irreps)), 2)
    (path,) = (tmp_path / "cueq_contraction").glob("*.npz")
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    else:
        if damage == "stale_key":
            arrays["key"] = np.array(str(arrays["key"]).replace('"format": 1', '"format": 0'))
        else:
            arrays["coefficients_2"] = arrays["coefficients_2"] * 2.0
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
    _clear_memory_caches()
    derived = cueq_power.contraction_paths(cueq_power.unit_irreps(str(irreps)), 2)
    assert all(np.array_equal(derived[name], reference[name]) for name in reference)
    _clear_memory_caches()
