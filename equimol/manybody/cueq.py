r"""``many_body: cueq``: cuEquivariance's symmetric contraction as the many-body self-product.

With ``A`` the node features (``C x 0e + C x 1o + ...`` up to ``lmax``, channel ``u``, ``d`` components
per channel) and ``k`` the node's element, cuEquivariance's symmetric contraction (MACE's product
basis; ``cue.descriptors.symmetric_contraction``) computes

.. math::

    P_{k}(A)_{u} = \sum_{\nu=1}^{\nu_{max}} \sum_{b} W_{k, b, u}\; U^{(\nu)}_{b}\big(A_u^{\otimes \nu}\big),

where ``U^(nu)_b`` runs over a basis of *all* equivariant homogeneous polynomials of degree ``nu`` of
``A_u`` into the output irreps (``b`` indexes (``nu``, output irrep, basis element)).

**How it differs from** ``many_body: cg`` (:class:`equimol.manybody.cg.SymmetricProduct`). The ``cg``
kind builds ``B^(nu) = CG_uuu(B^(nu-1), A; w^(nu))`` recursively: its weights enter as products
``w^(1) w^(2) ... w^(nu)`` (multilinear), and its intermediates are restricted to natural-parity irreps
up to ``lmax``. This kind is linear in its weights over a complete basis. Per element and channel:

* every ``cg`` self-product is exactly a ``cueq`` one (``tests/test_many_body_cueq.py`` fits ``W`` to
  a random ``cg`` product by least squares and reproduces it to 1e-10 in float64);
* the converse fails: ``cueq`` has ``n_b`` free weights (27 at ``lmax = 2``, ``nu_max = 3``), more
  functions than ``cg`` reaches (e.g. couplings through ``1e``), and its weights do not map one-to-one
  onto ``cg``'s. The two kinds are different models with the same body order, not the same model.

**Initialisation**: ``W ~ N(0, n_out / n_b)`` (``n_out`` output irreps), which keeps unit-variance
inputs at an output of order one.

**Evaluation.** The descriptor lists scalar paths ``(b, a_1..a_nu, i)`` with coefficients ``c``:
``P_{k}(A)_{u,i} = sum c W_{k,b,u} A_{u,a_1} ... A_{u,a_nu}``. cuEquivariance's PyTorch method
(``naive``) turns every path into one einsum and searches a contraction order over them with
``opt_einsum_fx`` (minutes at ``lmax = 3``, ``nu_max = 3``: about 9400 paths). Here, without a CUDA
kernel, the paths are folded into dense tables once, per degree ``nu`` and output irrep ``l``:
``S_{nu,l}[m, (b, i)]``, the summed coefficients of monomial ``m`` (sorted indices ``a_1 <= ... <= a_nu``)
into output component ``i`` through weight ``b``. A forward pass forms the monomials of each channel
(``[n, M, C]``), multiplies by ``S`` (one matmul per block) and contracts with the node's weights. On
a GPU with ``cuequivariance_ops_torch`` the same descriptor runs through cuEquivariance's CUDA kernel
(``uniform_1d``). Both evaluate the same polynomial with the same weights, so model files move
between them.

**Cache.** Deriving one channel's paths takes cuEquivariance seconds at ``lmax = 3``, ``nu_max = 3``
(``benchmarks/cueq_many_body_build_cpu.json``). They are kept per (irreps with multiplicity 1, degree,
cuEquivariance version) in ``<cache_root()>/cueq_contraction/<hash>.npz``
(:func:`equimol.utils.io.cache_root`; no pickle, key and checksum checked; a damaged file is derived
again), so a second build, and loading a model file, reads them.

Needs the ``cueq`` extra (``pip install 'equimol[cueq]'``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import zipfile
from pathlib import Path

import cuequivariance as cue
import numpy as np
import torch
from e3nn import o3
from torch import nn

from equimol.manybody.registry import register_many_body
from equimol.nn.linear import natural_irreps
from equimol.utils.io import atomic_write, cache_root

METHODS = ("auto", "dense", "naive", "uniform_1d")
_CACHE_FORMAT = 1


def _kernel_available() -> bool:
    return importlib.util.find_spec("cuequivariance_ops_torch") is not None and torch.cuda.is_available()


@functools.cache
def contraction_polynomial(irreps: str, correlation: int) -> cue.SegmentedPolynomial:
    """cuEquivariance's symmetric-contraction polynomial of ``irreps`` (e3nn string) into itself, degrees 1..nu."""
    cue_irreps = cue.Irreps(cue.O3, irreps)
    return cue.descriptors.symmetric_contraction(cue_irreps, cue_irreps, tuple(range(1, correlation + 1))).polynomial


def unit_irreps(irreps: str) -> str:
    """``irreps`` with every multiplicity 1 (the paths of one channel; the polynomial repeats them per channel)."""
    return str(o3.Irreps([(1, ir) for _, ir in o3.Irreps(irreps)]))


def _derive_paths(irreps: str, correlation: int) -> dict[str, np.ndarray]:
    """The scalar paths of one channel's polynomial: per degree ``nu``, ``paths_<nu>`` ``[P, nu + 2]`` (weight,
    ``nu`` inputs, output component) and ``coefficients_<nu>`` ``[P]``; ``basis`` the number of weights.

    Degree by degree, with the weights of degree ``nu`` after those of the lower degrees: the layout of
    :func:`contraction_polynomial` (which stacks the degrees in that order), without the cost of stacking.
    """
    cue_irreps = cue.Irreps(cue.O3, irreps)
    arrays, offset = {}, 0
    for degree in range(1, correlation + 1):
        polynomial = cue.descriptors.symmetric_contraction(cue_irreps, cue_irreps, (degree,)).polynomial
        ((_, descriptor),) = polynomial.operations
        paths = np.array([path.indices for path in descriptor.paths], dtype=np.int64).reshape(-1, degree + 2)
        paths[:, 0] += offset
        arrays[f"paths_{degree}"] = paths
        arrays[f"coefficients_{degree}"] = np.array([float(np.asarray(p.coefficients)) for p in descriptor.paths])
        offset += polynomial.inputs[0].size
    arrays["basis"] = np.array(offset)
    return arrays


def _cache_key(irreps: str, correlation: int) -> dict:
    return {"format": _CACHE_FORMAT, "irreps": irreps, "correlation": correlation, "cuequivariance": cue.__version__}


def _checksum(key: dict, arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
    for name in sorted(arrays):
        digest.update(name.encode() + np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def _read_cached(path: Path, key: dict, correlation: int) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file whose key and checksum match; None for a missing, stale or damaged file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        stored_key, stored_sum = json.loads(str(arrays.pop("key"))), str(arrays.pop("checksum"))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # missing, unreadable or not an npz archive
        return None
    expected = {"basis", *(f"{kind}_{nu}" for nu in range(1, correlation + 1) for kind in ("paths", "coefficients"))}
    if stored_key != key or set(arrays) != expected or stored_sum != _checksum(key, arrays):
        return None
    return arrays


@functools.cache
def contraction_paths(irreps: str, correlation: int) -> dict[str, np.ndarray]:
    """:func:`_derive_paths` of the unit ``irreps``, from the disk cache when there (module docstring)."""
    key = _cache_key(irreps, correlation)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    path = cache_root() / "cueq_contraction" / f"{digest}.npz"
    cached = _read_cached(path, key, correlation)
    if cached is not None:
        return cached
    arrays = _derive_paths(irreps, correlation)
    try:
        with atomic_write(path) as handle:
            np.savez(handle, key=np.array(json.dumps(key)), checksum=np.array(_checksum(key, arrays)), **arrays)
    except OSError:
        pass  # a read-only cache folder: derive again next time
    return arrays


def component_blocks(irreps: str) -> list[tuple[int, int]]:
    """``(first component, 2l + 1)`` of each irrep of ``irreps`` in one channel's ``d`` components."""
    dims = [ir.dim for _, ir in o3.Irreps(irreps)]
    return [(int(first), dim) for first, dim in zip(np.cumsum([0] + dims[:-1]), dims)]


@functools.cache
def dense_tables(irreps: str, correlation: int) -> list[dict[str, np.ndarray]]:
    """Per (degree, output irrep) block: monomial indices ``[M, nu]``, weights ``[W]``, first component, table ``S``.

    ``S`` is ``[M, W * (2l + 1)]``: the coefficients of the paths of :func:`contraction_paths` (unit
    ``irreps``) summed over the orderings of each monomial (see the module docstring).
    """
    arrays = contraction_paths(irreps, correlation)
    output_blocks = component_blocks(irreps)
    block_of = np.concatenate([np.full(dim, block) for block, (_, dim) in enumerate(output_blocks)])
    tables = []
    for degree in range(1, correlation + 1):
        indices, coefficients = arrays[f"paths_{degree}"], arrays[f"coefficients_{degree}"]
        weights, inputs, outputs = indices[:, 0], np.sort(indices[:, 1 : 1 + degree], axis=1), indices[:, -1]
        for block, (first, dim) in enumerate(output_blocks):
            selected = block_of[outputs] == block
            if not selected.any():
                continue
            monomials, monomial_of = np.unique(inputs[selected], axis=0, return_inverse=True)
            used, weight_of = np.unique(weights[selected], return_inverse=True)
            table = np.zeros((len(monomials), len(used), dim))
            np.add.at(table, (monomial_of.reshape(-1), weight_of, outputs[selected] - first), coefficients[selected])
            tables.append(
                {"monomials": monomials, "weights": used, "first": first, "table": table.reshape(len(monomials), -1)}
            )
    return tables


class DenseSymmetricContraction(nn.Module):
    """The polynomial of :func:`contraction_polynomial` through the dense tables of :func:`dense_tables`.

    Args:
        irreps: e3nn irreps string (one multiplicity ``C``), input and output.
        correlation: ``nu_max``.
        dtype: dtype of the tables.
    """

    def __init__(self, irreps: str, correlation: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.output_blocks = component_blocks(irreps)
        self.blocks = []
        for index, block in enumerate(dense_tables(unit_irreps(irreps), correlation)):
            for name in ("monomials", "weights", "table"):
                value = torch.from_numpy(block[name])
                self.register_buffer(f"{name}_{index}", value.to(dtype) if name == "table" else value, persistent=False)
            self.blocks.append((index, int(block["first"]), int(block["table"].shape[1] // len(block["weights"]))))

    def forward(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Node weights ``[n, n_b, C]`` and features ``[n, d, C]`` (component-major) -> ``[n, d, C]``."""
        parts: dict[int, torch.Tensor] = {}
        for index, first, dim in self.blocks:
            monomials = getattr(self, f"monomials_{index}")
            power = x[:, monomials[:, 0]]
            for factor in range(1, monomials.shape[1]):
                power = power * x[:, monomials[:, factor]]
            basis = torch.einsum("nmu,mj->nju", power, getattr(self, f"table_{index}"))  # [n, W * dim, C]
            basis = basis.view(x.shape[0], -1, dim, x.shape[2])
            node_weight = weight[:, getattr(self, f"weights_{index}")]  # [n, W, C]
            part = torch.einsum("nwiu,nwu->niu", basis, node_weight)
            parts[first] = parts[first] + part if first in parts else part
        count, channels = x.shape[0], x.shape[2]
        blocks = [parts.get(first, x.new_zeros(count, dim, channels)) for first, dim in self.output_blocks]
        return torch.cat(blocks, dim=1)


class _Contraction(nn.Module):
    """The element weights ``weight`` ``[num_elements, n_b, C]`` and the evaluator of the polynomial."""

    def __init__(self, irreps: str, correlation: int, num_elements: int, dtype: torch.dtype, method: str) -> None:
        super().__init__()
        channels = o3.Irreps(irreps)[0].mul
        basis = int(contraction_paths(unit_irreps(irreps), correlation)["basis"])
        self.weight = nn.Parameter(torch.randn(num_elements, basis, channels, dtype=dtype))
        if method == "auto":
            method = "uniform_1d" if _kernel_available() else "dense"
        self.method = method
        if method == "dense":
            self.evaluate = DenseSymmetricContraction(irreps, correlation, dtype)
        else:
            import cuequivariance_torch as cuet

            self.evaluate = cuet.SegmentedPolynomial(contraction_polynomial(irreps, correlation), method=method)
            # cuEquivariance's constants are rebuilt on construction: keep them out of checkpoints.
            for module in self.evaluate.modules():
                module._non_persistent_buffers_set.update(module._buffers.keys())

    def forward(self, x: torch.Tensor, element_index: torch.Tensor) -> torch.Tensor:
        """Features ``[n, d, C]`` (component-major, cuEquivariance's ``ir_mul``) -> ``[n, d, C]``."""
        if self.method == "dense":
            return self.evaluate(self.weight[element_index], x)
        (out,) = self.evaluate([self.weight.flatten(1), x.flatten(1)], input_indices={0: element_index})
        return out.view(x.shape)


class CueqSymmetricContraction(nn.Module):
    """``sum_nu P^(nu)`` through cuEquivariance's descriptor, ``[n, irreps.dim] x [n] -> [n, irreps.dim]``.

    Args:
        irreps: ``C x 0e + C x 1o + ...`` (one multiplicity), input and output.
        correlation: ``nu_max >= 1``.
        num_elements: rows of the weight table.
        dtype: weight dtype (the model's).
        method: ``auto`` (cuEquivariance's CUDA kernel where ``cuequivariance_ops_torch`` and a GPU exist,
            else ``dense``), ``dense`` (module docstring), or a cuEquivariance method (``naive``, ``uniform_1d``).
    """

    def __init__(
        self,
        irreps: o3.Irreps | str,
        correlation: int,
        num_elements: int,
        dtype: torch.dtype = torch.float64,
        method: str = "auto",
    ) -> None:
        super().__init__()
        if correlation < 1:
            raise ValueError(f"correlation must be >= 1, got {correlation}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.irreps = o3.Irreps(irreps)
        self.contraction = _Contraction(str(self.irreps), correlation, num_elements, dtype, method)
        with torch.no_grad():
            self.contraction.weight.mul_(math.sqrt(len(self.irreps) / self.contraction.weight.shape[1]))

    @property
    def weight(self) -> nn.Parameter:
        """``W`` ``[num_elements, n_b, C]`` (see the module docstring)."""
        return self.contraction.weight

    def forward(self, x: torch.Tensor, element_index: torch.Tensor) -> torch.Tensor:
        """``x`` ``[n, irreps.dim]``, ``element_index`` ``[n]`` int -> ``[n, irreps.dim]``."""
        count = x.shape[0]
        # e3nn's mul_ir blocks [C, 2l+1] -> component-major [n, d, C] (cuEquivariance's ir_mul) and back
        blocks = [x[:, sl].view(count, mul, ir.dim) for (mul, ir), sl in zip(self.irreps, self.irreps.slices())]
        components = torch.cat(blocks, dim=2).transpose(1, 2)
        out = self.contraction(components, element_index).transpose(1, 2)
        blocks = component_blocks(str(self.irreps))
        return torch.cat([out[:, :, first : first + dim].reshape(count, -1) for first, dim in blocks], dim=1)


@register_many_body("cueq")
def build(channels: int, lmax: int, correlation: int, num_elements: int) -> CueqSymmetricContraction:
    """:class:`CueqSymmetricContraction` on ``natural_irreps(channels, lmax)`` (the registry's builder)."""
    return CueqSymmetricContraction(natural_irreps(channels, lmax), correlation, num_elements)
