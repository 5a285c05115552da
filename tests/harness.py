r"""Correctness harness shared by every backend and kernel test.

Everything here works in float64 and builds e3nn constants (Wigner D, 3j, generators) inside
:func:`equimol.utils.dtype.float64_construction`, because e3nn computes them in torch's default
dtype and float32-built constants limit any float64 check to about 1e-6.

Tolerances (float64, order-one inputs):

* ``EQUIVARIANCE_TOL = 1e-10``: max abs error of ``f(D x) - D f(x)``. Exact backends reach about
  1e-14; 1e-10 leaves four orders of magnitude for accumulation over L <= 8 while still catching
  any float32-built constant (about 1e-6).
* ``REFERENCE_TOL = 1e-10``: max abs difference from an exact reference, same reasoning.
"""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from e3nn import o3

from equimol.microbench.systems import tiny_model_section  # noqa: F401  (the tests import it from here)
from equimol.tp import TensorProductBackend
from equimol.utils.dtype import float64_construction
from equimol.utils.symmetry import (  # noqa: F401  (the tests import them from here)
    random_inputs,
    random_orthogonal_matrices,
    spherical_harmonics_features,
    wigner_d,
)

EQUIVARIANCE_TOL = 1e-10
REFERENCE_TOL = 1e-10


def equivariance_error(
    function: Callable[..., torch.Tensor],
    irreps_inputs: Sequence[o3.Irreps | str | None],
    irreps_output: o3.Irreps | str,
    inputs: Sequence[torch.Tensor],
    matrices: Sequence[torch.Tensor],
) -> float:
    """Max abs of ``f(D_1 x_1, ..., D_k x_k) - D_out f(x_1, ..., x_k)`` over ``matrices``.

    ``irreps_inputs[i] = None`` marks an invariant input (weights), passed through unchanged.
    """
    reference = function(*inputs)
    worst = 0.0
    for matrix in matrices:
        rotated = [x if irreps is None else x @ wigner_d(irreps, matrix).T for x, irreps in zip(inputs, irreps_inputs)]
        expected = reference @ wigner_d(irreps_output, matrix).T
        worst = max(worst, (function(*rotated) - expected).abs().max().item())
    return worst


def tp_equivariance_error(tp: TensorProductBackend, count: int = 6, rotations: int = 4, seed: int = 0) -> float:
    """Equivariance error of a float64 tensor product with random per-sample weights."""
    x1, x2, weight = random_inputs(tp, count, seed)
    return equivariance_error(
        tp,
        [tp.irreps_in1, tp.irreps_in2, None],
        tp.irreps_out,
        [x1, x2, weight],
        random_orthogonal_matrices(rotations, seed),
    )


def check_gradients(tp: TensorProductBackend, count: int = 3, seed: int = 0) -> None:
    """``gradcheck`` and ``gradgradcheck`` in float64 with respect to ``x1``, ``x2`` and ``weight``."""
    x1, x2, weight = random_inputs(tp, count, seed)
    inputs = tuple(t.clone().requires_grad_(True) for t in (x1, x2, weight))
    assert torch.autograd.gradcheck(tp, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)
    assert torch.autograd.gradgradcheck(tp, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Exact Gaunt reference
# --------------------------------------------------------------------------------------------


def gaunt_coupling(l1: int, l2: int, l3: int) -> torch.Tensor:
    r"""Real Gaunt coefficients ``G[m1, m2, m3] = \int Y_{l1 m1} Y_{l2 m2} Y_{l3 m3} d\Omega``.

    ``Y`` are e3nn's real spherical harmonics, orthonormal on the sphere. No quadrature: the
    Gaunt tensor equals ``c * C`` with e3nn's Wigner 3j ``C`` (unit norm), and ``c`` follows from
    the pointwise identity ``sum_{m1 m2} C[m1, m2, m3] Y_{l1 m1}(s) Y_{l2 m2}(s) = c / (2 l3 + 1)
    Y_{l3 m3}(s)``, evaluated at one direction ``s``. ``c = 0`` for odd ``l1 + l2 + l3``.
    """
    with float64_construction():
        coupling = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        direction = torch.tensor([0.3, -0.5, 0.81], dtype=torch.float64)
        y1, y2, y3 = (
            o3.spherical_harmonics(l, direction, normalize=True, normalization="integral") for l in (l1, l2, l3)
        )
    coupled = torch.einsum("ijk,i,j->k", coupling, y1, y2)
    scale = (2 * l3 + 1) * torch.dot(coupled, y3) / torch.dot(y3, y3)
    residual = coupled - scale / (2 * l3 + 1) * y3
    assert residual.abs().max() < 1e-12, "the pointwise coupling identity failed; e3nn conventions changed?"
    if (l1 + l2 + l3) % 2:
        scale = torch.zeros((), dtype=torch.float64)
    return scale * coupling


def gaunt_magnitude(l1: int, l2: int, l3: int) -> float:
    r"""``sqrt((2l1+1)(2l2+1)(2l3+1)/4pi) |(l1 l2 l3; 0 0 0)|``, the closed form of ``|c|`` (Racah)."""
    if (l1 + l2 + l3) % 2 or l3 > l1 + l2 or l3 < abs(l1 - l2):
        return 0.0
    g = (l1 + l2 + l3) // 2
    f = math.factorial
    three_j = math.sqrt(f(2 * g - 2 * l1) * f(2 * g - 2 * l2) * f(2 * g - 2 * l3) / f(2 * g + 1))
    three_j *= f(g) / (f(g - l1) * f(g - l2) * f(g - l3))
    return math.sqrt((2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1) / (4 * math.pi)) * three_j


def gaunt_reference(
    x1: torch.Tensor,
    x2: torch.Tensor,
    weight: torch.Tensor,
    irreps_in1: o3.Irreps | str,
    irreps_in2: o3.Irreps | str,
    irreps_out: o3.Irreps | str,
) -> torch.Tensor:
    r"""Exact Gaunt tensor product, the ground truth of the ``gaunt`` backend (float64).

    With per-(channel, degree) weights ``w1[n,u,i1]``, ``w2[n,u,i2]``, ``w3[n,u,i3]`` laid out in
    ``weight`` as ``cat(w1.flatten(1), w2.flatten(1), w3.flatten(1))``, the two sphere functions
    ``f_k(s) = sum_l a_k^{(l)} . Y^c_l(s)`` (component-normalized ``Y^c = sqrt(4 pi) Y``,
    ``a_1 = w1 x1``, ``a_2 = w2 x2``) are multiplied and projected back:

    .. math:: z^{(l_3)}_{m_3} = w_3\, n_{l_3}\, \frac{1}{4\pi} \int f_1 f_2\, Y^c_{l_3 m_3}\, d\Omega
              = w_3\, n_{l_3} \sqrt{4\pi} \sum G\, a_1 a_2,

    with ``n_{l3} = (sum over even paths into l3 of 4 pi c^2 / (2 l3 + 1))^{-1/2}`` (unit output
    variance, the interface's normalization). Computed path by path with e3nn's 3j symbols.
    """
    irreps_in1, irreps_in2, irreps_out = o3.Irreps(irreps_in1), o3.Irreps(irreps_in2), o3.Irreps(irreps_out)
    count, channels = x1.shape[0], irreps_in1[0].mul
    n1, n2, n3 = len(irreps_in1), len(irreps_in2), len(irreps_out)
    w1, w2, w3 = torch.split(weight, [channels * n1, channels * n2, channels * n3], dim=1)
    w1, w2, w3 = (w.reshape(count, channels, -1) for w in (w1, w2, w3))
    blocks1 = [x1[:, sl].reshape(count, channels, ir.dim) for (_, ir), sl in zip(irreps_in1, irreps_in1.slices())]
    blocks2 = [x2[:, sl] for sl in irreps_in2.slices()]
    outputs = []
    for i3, (_, ir3) in enumerate(irreps_out):
        total = x1.new_zeros(count, channels, ir3.dim)
        fan_in = 0.0
        for i1, (_, ir1) in enumerate(irreps_in1):
            for i2, (_, ir2) in enumerate(irreps_in2):
                if (ir1.l + ir2.l + ir3.l) % 2 or ir3 not in ir1 * ir2:
                    continue
                coupling = gaunt_coupling(ir1.l, ir2.l, ir3.l).to(x1.dtype)
                fan_in += 4 * math.pi * coupling[:, :, 0].pow(2).sum().item()
                a1 = blocks1[i1] * w1[:, :, i1, None]
                a2 = blocks2[i2][:, None, :] * w2[:, :, i2, None]
                total = total + math.sqrt(4 * math.pi) * torch.einsum("ijk,nui,nuj->nuk", coupling, a1, a2)
        if fan_in > 0:
            total = total * w3[:, :, i3, None] / math.sqrt(fan_in)
        outputs.append(total.reshape(count, -1))
    return torch.cat(outputs, dim=-1)


def run_together(
    commands: Sequence[Sequence[str]], folder: Path, env: dict[str, str], timeout: float = 600.0
) -> list[subprocess.CompletedProcess]:
    """Start ``commands`` at once and wait for all; each one's stdout and stderr go to files in ``folder``.

    Processes that talk to each other (DDP ranks, a shared store) must not write into pipes that the
    test reads one process at a time: once a pipe's 64 KiB buffer fills, that process blocks while the
    test waits on another one, which waits on it in a collective. Files never fill.
    """
    folder.mkdir(parents=True, exist_ok=True)
    started = []
    for index, command in enumerate(commands):
        stdout, stderr = folder / f"{index}.stdout", folder / f"{index}.stderr"
        with stdout.open("w") as out, stderr.open("w") as err:
            started.append((subprocess.Popen(list(command), stdout=out, stderr=err, env=env), stdout, stderr))
    deadline = time.monotonic() + timeout
    try:
        for process, _, _ in started:
            process.wait(timeout=max(deadline - time.monotonic(), 1.0))
    finally:
        for process, _, _ in started:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [
        subprocess.CompletedProcess(process.args, process.returncode, stdout.read_text(), stderr.read_text())
        for process, stdout, stderr in started
    ]
