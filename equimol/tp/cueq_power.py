r"""``many_body: cueq``: cuEquivariance's symmetric contraction as the many-body self-product.

With ``A`` the node features (``C x 0e + C x 1o + ...`` up to ``lmax``, channel ``u``) and ``k`` the
node's element, cuEquivariance's ``SymmetricContraction`` (MACE's product basis) computes

.. math::

    P_{k}(A)_{u} = \sum_{\nu=1}^{\nu_{max}} \sum_{b} W_{k, b, u}\; U^{(\nu)}_{b}\big(A_u^{\otimes \nu}\big),

where ``U^(nu)_b`` runs over a basis of *all* equivariant homogeneous polynomials of degree ``nu`` of
``A_u`` into the output irreps (``b`` indexes (``nu``, output irrep, basis element)).

**How it differs from** ``many_body: cg`` (:class:`equimol.nn.many_body.SymmetricProduct`). The ``cg``
kind builds ``B^(nu) = CG_uuu(B^(nu-1), A; w^(nu))`` recursively: its weights enter as products
``w^(1) w^(2) ... w^(nu)`` (multilinear), and its intermediates are restricted to natural-parity irreps
up to ``lmax``. This kind is linear in its weights over a complete basis. Per element and channel:

* every ``cg`` self-product is exactly a ``cueq`` one (``tests/test_many_body_cueq.py`` fits ``W`` to
  a random ``cg`` product by least squares and reproduces it to 1e-10 in float64);
* the converse fails: ``cueq`` has ``n_b`` free weights (27 at ``lmax = 2``, ``nu_max = 3``), more
  functions than ``cg`` reaches (e.g. couplings through ``1e``), and its weights do not map one-to-one
  onto ``cg``'s. The two kinds are different models with the same body order, not the same model.

**Initialisation**: ``W ~ N(0, n_out / n_b)`` (``n_out`` output irreps), which keeps unit-variance
inputs at an output of order one. **Cost**: cuEquivariance derives the basis when the block is built;
at ``lmax = 2``, ``nu_max = 3`` that took 144 s on a loaded 2-core CPU (1.5 s at ``nu_max = 2``).

Needs the ``cueq`` extra (``pip install 'equimol[cueq]'``); on a GPU with cuEquivariance's ops package
it runs its CUDA kernel, elsewhere its PyTorch implementation (chosen explicitly: no warning).
"""

from __future__ import annotations

import importlib.util
import math

import cuequivariance as cue
import cuequivariance_torch as cuet
import torch
from e3nn import o3
from torch import nn


def _cuda_method() -> str | None:
    """None lets cuEquivariance pick its CUDA kernel; ``naive`` is its PyTorch implementation."""
    has_ops = importlib.util.find_spec("cuequivariance_ops_torch") is not None
    return None if has_ops and torch.cuda.is_available() else "naive"


class CueqSymmetricContraction(nn.Module):
    """``sum_nu P^(nu)`` through cuEquivariance, ``[n, irreps.dim] x [n] -> [n, irreps.dim]``.

    Args:
        irreps: ``C x 0e + C x 1o + ...`` (one multiplicity), input and output.
        correlation: ``nu_max >= 1``.
        num_elements: rows of the weight table.
        dtype: weight dtype (the model's).
    """

    def __init__(
        self, irreps: o3.Irreps | str, correlation: int, num_elements: int, dtype: torch.dtype = torch.float64
    ) -> None:
        super().__init__()
        if correlation < 1:
            raise ValueError(f"correlation must be >= 1, got {correlation}")
        self.irreps = o3.Irreps(irreps)
        cue_irreps = cue.Irreps(cue.O3, str(self.irreps))
        self.contraction = cuet.SymmetricContraction(
            cue_irreps,
            cue_irreps,
            contraction_degree=correlation,
            num_elements=num_elements,
            layout=cue.mul_ir,
            dtype=dtype,
            method=_cuda_method(),
        )
        basis = self.contraction.weight.shape[1]
        with torch.no_grad():
            self.contraction.weight.mul_(math.sqrt(len(self.irreps) / basis))
        # cuEquivariance's constants are rebuilt on construction: keep them out of checkpoints.
        for module in self.contraction.modules():
            module._non_persistent_buffers_set.update(module._buffers.keys())

    @property
    def weight(self) -> nn.Parameter:
        """``W`` ``[num_elements, n_b, C]`` (see the module docstring)."""
        return self.contraction.weight

    def forward(self, x: torch.Tensor, element_index: torch.Tensor) -> torch.Tensor:
        """``x`` ``[n, irreps.dim]``, ``element_index`` ``[n]`` int -> ``[n, irreps.dim]``."""
        return self.contraction(x, element_index)
