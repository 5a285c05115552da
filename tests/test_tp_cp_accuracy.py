r"""The ``cp`` backend at its default rank ``7 L^2``, L = 1..3: reconstruction and equivariance errors.

The bound asserted is the one derived in :mod:`equimol.tp.cp`: for every sample ``n``, channel ``u``
and orthogonal ``D`` (50 random rotations and the same 50 composed with inversion, float64)

    ``||cp(D1 x, D2 y, w) - D3 cp(x, y, w)||_2 <= 2 eps ||M||_F ||w_{n,u}|| ||x_{n,u}|| ||y_n||``

with ``eps`` the relative reconstruction error. It is a theorem (Cauchy-Schwarz), so it is
asserted with only a 1e-12 absolute allowance for float64 rounding of the defect itself.
"""

import pytest
import torch
from harness import random_inputs, random_orthogonal_matrices, wigner_d

from equimol.tp import TensorProduct, to_channel_major


def natural_irreps(lmax: int, channels: int) -> tuple[str, str, str]:
    degrees = [f"{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lmax + 1)]
    features = " + ".join(f"{channels}x{d}" for d in degrees)
    return features, " + ".join(degrees), features


@pytest.mark.parametrize("lmax", [1, 2, 3])
def test_default_rank_reconstruction_and_equivariance_bound(lmax):
    irreps = natural_irreps(lmax, channels=3)
    shared = TensorProduct(*irreps, backend="cp", dtype=torch.float64)
    # per-path weights cannot be compressed to 7 L^2 (each path block needs its own terms): exact rank
    per_path = TensorProduct(*irreps, backend="cp", dtype=torch.float64, weight_sharing=False, cp_rank="exact")
    assert shared.rank == 7 * lmax**2
    # the target is 1e-3; the default fit_tolerance 1e-6 is reached for L <= 3
    assert shared.relative_error <= 1e-6 and per_path.relative_error <= 1e-13

    matrices = random_orthogonal_matrices(50, seed=lmax)
    # irreps_in1 == irreps_out here: one Wigner D for the features, one for the edge attributes
    representations = [(wigner_d(shared.irreps_in1, m), wigner_d(shared.irreps_in2, m)) for m in matrices]
    for tp in (shared, per_path):
        x1, x2, weight = random_inputs(tp, count=8, seed=lmax)
        channels = tp.channels
        x_norm = to_channel_major(x1, tp.irreps_in1).norm(dim=-1)  # [N, C]
        w_norm = weight.view(8, -1, channels).norm(dim=1)  # [N, C]: |w| shared, ||w_{., u}|| per path
        bound = 2 * tp.relative_error * tp.coupling_norm * w_norm * x_norm * x2.norm(dim=-1, keepdim=True)
        reference = tp(x1, x2, weight)
        rmse = []
        for d_features, d_edges in representations:
            defect = tp(x1 @ d_features.T, x2 @ d_edges.T, weight) - reference @ d_features.T
            assert (to_channel_major(defect, tp.irreps_out).norm(dim=-1) <= bound + 1e-12).all()
            rmse.append(defect.pow(2).mean().sqrt().item())
        mean_rmse = sum(rmse) / len(rmse)
        # RMSE over all N C d3 components: sum_{n,u} ||defect_{n,u}||^2 / (N C d3) <= mean(bound^2) / d3
        per_channel_dim = tp.irreps_out.dim // channels
        assert mean_rmse <= (bound.pow(2).mean() / per_channel_dim).sqrt().item() + 1e-12
