"""Exact O(3) representation matrices and random inputs for equivariance checks (tests and benchmarks).

Everything is float64, and e3nn's constants are built inside
:func:`~equimol.utils.dtype.float64_construction`: e3nn computes them in torch's default dtype, and
float32-built constants would limit any float64 check to about 1e-6.
"""

from __future__ import annotations

import torch
from e3nn import o3

from equimol.utils.dtype import float64_construction


def random_orthogonal_matrices(count: int, seed: int = 0) -> list[torch.Tensor]:
    """``count`` random rotations followed by the same rotations composed with inversion (float64)."""
    generator = torch.Generator().manual_seed(seed)
    with float64_construction():
        quaternions = torch.randn(count, 4, generator=generator, dtype=torch.float64)
        rotations = o3.quaternion_to_matrix(quaternions / quaternions.norm(dim=-1, keepdim=True))
    return [r for r in rotations] + [-r for r in rotations]


def wigner_d(irreps: o3.Irreps | str, matrix: torch.Tensor) -> torch.Tensor:
    """Representation matrix of ``matrix`` (3x3 orthogonal, float64) on ``irreps``, float64.

    e3nn's ``D_from_matrix`` goes through Euler angles (``acos`` near beta = 0 loses digits) and
    showed 3e-13 invariance errors of the 3j symbols at l = 4. Here each block ``D_l`` solves
    ``Y_l(R v) = D_l Y_l(v)`` by least squares over many directions ``v`` from e3nn's polynomial
    spherical harmonics, which is accurate to a few ulps; inversion multiplies by the parity.
    """
    matrix = matrix.to(torch.float64)
    determinant = torch.det(matrix).sign()
    proper = matrix * determinant
    generator = torch.Generator().manual_seed(1234)
    directions = torch.randn(64, 3, generator=generator, dtype=torch.float64)
    blocks = []
    for mul, ir in o3.Irreps(irreps):
        y = o3.spherical_harmonics(ir.l, directions, normalize=True)
        y_rotated = o3.spherical_harmonics(ir.l, directions @ proper.T, normalize=True)
        block = torch.linalg.lstsq(y, y_rotated).solution.T
        if determinant < 0:
            block = block * ir.p
        blocks.extend([block] * mul)
    return torch.block_diag(*blocks)


def spherical_harmonics_features(irreps: o3.Irreps | str, count: int, seed: int = 0) -> torch.Tensor:
    """Component-normalized spherical harmonics of ``count`` random directions, ``[count, dim]``."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(count, 3, generator=generator, dtype=torch.float64)
    irreps = o3.Irreps(irreps)
    blocks = [o3.spherical_harmonics(ir.l, vectors, normalize=True, normalization="component") for _, ir in irreps]
    # A parity (-1)^(l+1) irrep (e.g. 1e) is not a spherical harmonic; random data keeps it generic.
    for index, (_, ir) in enumerate(irreps):
        if ir.p != (-1) ** ir.l:
            blocks[index] = torch.randn(count, ir.dim, generator=generator, dtype=torch.float64)
    return torch.cat(blocks, dim=-1)


def random_inputs(
    tp: torch.nn.Module, count: int = 6, seed: int = 0, per_sample_weight: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Unit-variance float64 ``x1``, spherical-harmonic ``x2`` and per-sample weights for ``tp``."""
    generator = torch.Generator().manual_seed(seed)
    x1 = torch.randn(count, tp.irreps_in1.dim, generator=generator, dtype=torch.float64)
    x2 = spherical_harmonics_features(tp.irreps_in2, count, seed=seed + 1)
    weight = None
    if per_sample_weight:
        weight = torch.randn(count, tp.weight_numel, generator=generator, dtype=torch.float64)
    return x1, x2, weight
