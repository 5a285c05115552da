r"""Backend ``cp``: the CP-decomposed tensor product (TDN), parity-exact, with path-weight sharing.

The ``cg`` product of one channel is a bilinear map ``z_k = sum_ij M_ijk x_i y_j`` with the stacked
coupling tensor ``M [d1, d2, d3]`` (:mod:`equimol.tp.cp_coupling`). ``cp`` replaces ``M`` by a rank-``R``
CP decomposition restricted to the parity-allowed entries,

.. math:: \tilde M_{ijk} = \Pi_{ijk} \sum_r A_{ir} B_{jr} C_{rk}, \qquad \Pi_{ijk} = [p_i p_j p_k = 1],

so that, with ``s`` and ``t`` the parities of the input components and ``X_s`` the components of
parity ``s``,

.. math::

    u^{s}_{n,u,r} = \sum_{i \in X_s} x_{n,u,i} A_{ir}, \quad v^{t}_{n,r} = \sum_{j \in Y_t} y_{n,j} B_{jr}, \quad
    z_{n,u,k} = w_{n,u} \sum_r C_{rk} \sum_{s t = p_k} u^{s}_{n,u,r}\, v^{t}_{n,r}.

Per channel this costs ``O(R (d1 + d2 + d3))`` instead of ``O(L^6)``; with ``R = 7 L^2`` it is
``O(L^4)``. Everything is a batched matrix product (the operation a fused kernel replaces). The
forward evaluates the parity sum through ``p = (u^+ + u^-)(v^+ + v^-)`` and
``q = (u^+ - u^-)(v^+ - v^-)``, ``z = (p C + s_k\, q C) / 2``: two elementwise products per term
instead of four (half the products of the four-product form).

**Parity.** Every output that parity forbids is an exact zero (for instance ``1o x 1o`` has no
``1o`` part): a forbidden output gets only products with an exactly-zero factor. TDN, in contrast,
treats every irrep as even.

**Strategies.** ``"factors"`` is the evaluation above. ``"edge"`` (shared weights only) contracts
the second operand first, ``N_n = sum_j y_{n,j} \tilde M_{:,j,:}`` ``[d1, d3]`` per sample (one GEMM
with the reconstructed tensor), then ``z_{n,u} = w_{n,u} x_{n,u} N_n`` for all channels (one batched
GEMM): ``d1 d2 d3 + C d1 d3`` multiply-adds per sample instead of ``2 R (C d1 + d2 + C d3)``, the same
product to round-off. With ``C`` channels sharing each sample's matrix this is usually the cheaper
order (``benchmarks/tp_speed_cpu.json``); :func:`choose_cp_strategy` compares the two counts.

**Weights.** ``weight_sharing=True`` (default): one weight per channel and sample, shared by all
paths, ``weight_numel = C``, laid out as ``weight.view(N, C)``. ``weight_sharing=False``: one weight
per path and channel as in ``cg``, ``weight_numel = n_paths * C``, ``weight.view(N, n_paths, C)``
in :attr:`paths` order; every rank-one term then lies in one path's block and takes its weight.
A path's block (a single CG tensor) barely compresses, so per-path weights need close to the exact
rank (at L = 2, rank 28 of 73 leaves a relative error of about 0.7): sharing is what makes a
rank of ``7 L^2`` enough.

**Accuracy.** ``relative_error`` is ``epsilon = ||M - \tilde M||_F / ||M||_F``. At ``cp_rank="exact"``
``epsilon ~ 1e-13`` and ``cp`` equals ``cg`` (all weights one with sharing; any weights per path).
The parity-exact exact rank is far below TDN's ``(L+1)^4``: 10, 55, 178 for L = 1, 2, 3 (16, 81,
256). With sharing, ALS at ``7 L^2`` reaches the default ``fit_tolerance=1e-6`` for L <= 3
and about 1e-4 for L = 4..6, where the fit stops on stagnation and warns (``tests/test_tp_cp_accuracy.py``).

**Equivariance bound.** The exact product ``T`` is equivariant, so for orthogonal representation
matrices ``D1, D2, D3`` (rotations and inversion) the defect of ``\tilde T = T + E`` is
``\tilde T(D1 x, D2 y) - D3 \tilde T(x, y) = E(D1 x, D2 y) - D3 E(x, y)``. Cauchy-Schwarz gives
``||E(a, b)||_2 <= ||E||_F ||a||_2 ||b||_2`` and the ``D`` preserve norms, hence for every sample
``n`` and channel ``u``

.. math:: \| \tilde T(D_1 x, D_2 y) - D_3 \tilde T(x, y) \|_2 \le 2\, \epsilon\, \|M\|_F\,
          \|w_{n,\cdot,u}\|_2\, \|x_{n,u}\|_2\, \|y_n\|_2

(``||w_{n,.,u}||_2 = |w_{n,u}|`` with sharing; with per-path weights the blocks of ``E`` are
disjoint and Cauchy-Schwarz over paths gives the same form). ``tests/test_tp_cp_accuracy.py``
asserts it; ``benchmarks/cp_rank_table.py`` measures the mean error over 50 random rotations.
"""

from __future__ import annotations

import os
import warnings

import torch

from equimol import __version__
from equimol.tp.cp_cache import cached_fit
from equimol.tp.cp_coupling import (
    NORMALIZATION,
    CPFactors,
    component_parities,
    coupling_tensor,
    max_degree,
    parity_mask,
    path_blocks,
    reconstruct,
)
from equimol.tp.cp_fit import fit_factors, resolve_rank
from equimol.tp.factored import FactoredProduct, WeightGroup
from equimol.tp.interface import TensorProductBackend, register_backend
from equimol.tp.irreps import IrrepsLike, component_major_index


@register_backend("cp")
class CPTensorProduct(TensorProductBackend):
    """Channel-wise tensor product through a parity-exact CP decomposition of the CG tensor.

    Args:
        irreps_in1, irreps_in2, irreps_out: see :func:`equimol.tp.TensorProduct`.
        cp_rank: an int ``R``; ``"7L2"`` (``7 L^2`` with ``L`` the largest degree, the TDN default);
            or ``"exact"``, the rank of an exact decomposition (slice-wise SVDs). A rank at or above
            the exact rank is replaced by the exact rank (:attr:`rank` is the one used).
        weight_sharing: True: one weight per channel shared by all paths (``weight_numel = C``);
            False: one weight per path and channel (``weight_numel = n_paths * C``).
        fit_tolerance: target of the relative reconstruction error; ALS stops on reaching it
            (or when it stops improving: check :attr:`relative_error`, a warning says so).
        seed: seed of the deterministic ALS fit.
        cache_dir: cache folder (default ``$EQUIMOL_CACHE_DIR``, ``$XDG_CACHE_HOME/equimol`` or
            ``~/.cache/equimol``); factors live in its ``cp_factors/`` subfolder.
        strategy: ``"factors"`` (rank-``R`` products, any weights), ``"edge"`` (contract the
            second operand with the reconstructed tensor first; shared weights only) or ``"auto"``
            (:func:`choose_cp_strategy`). Same product to round-off.
        **base_options: ``internal_weights``, ``dtype``, ``device``, ``kernel``, ``deterministic``
            (see :class:`~equimol.tp.interface.TensorProductBackend`); factors are fitted in float64.

    Attributes:
        rank: ``R``; ``relative_error``: ``||M - \\tilde M||_F / ||M||_F``; ``coupling_norm``: ``||M||_F``;
        ``A [d1, R]``, ``B [d2, R]``, ``C [R, d3]``: the factors (buffers, float64 masters).
    """

    def __init__(
        self,
        irreps_in1: IrrepsLike,
        irreps_in2: IrrepsLike,
        irreps_out: IrrepsLike,
        *,
        cp_rank: int | str = "7L2",
        weight_sharing: bool = True,
        fit_tolerance: float = 1e-6,
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
        strategy: str = "auto",
        **base_options,
    ) -> None:
        super().__init__(irreps_in1, irreps_in2, irreps_out, **base_options)
        if not isinstance(fit_tolerance, float | int) or not 0 < fit_tolerance < 1:
            raise ValueError(f"fit_tolerance={fit_tolerance!r} must be a number in (0, 1)")
        if not isinstance(weight_sharing, bool):
            raise ValueError(f"weight_sharing={weight_sharing!r} must be True or False")
        if strategy not in CP_STRATEGIES:
            raise ValueError(f"strategy={strategy!r} is not one of {CP_STRATEGIES} for backend 'cp'")
        if strategy == "edge" and not weight_sharing:
            raise ValueError("strategy='edge' needs weight_sharing=True (per-path weights differ per channel)")
        if not self.paths:
            raise self._unsupported("no parity- and triangle-allowed path connects them")
        requested = resolve_rank(cp_rank, max_degree(self.irreps_in1, self.irreps_in2, self.irreps_out))
        self.weight_sharing = weight_sharing
        parities = tuple(component_parities(irreps) for irreps in (self.irreps_in1, self.irreps_in2, self.irreps_out))
        M = coupling_tensor(self.irreps_in1, self.irreps_in2, self.irreps_out)
        blocks = None if weight_sharing else path_blocks(self.paths, self.irreps_in1, self.irreps_in2, self.irreps_out)
        key = {
            "irreps": f"{_single(self.irreps_in1)} x {_single(self.irreps_in2)} -> {_single(self.irreps_out)}",
            "rank": "exact" if requested is None else str(requested),
            "weight_sharing": str(weight_sharing),
            "fit_tolerance": repr(float(fit_tolerance)),
            "seed": str(int(seed)),
            "normalization": NORMALIZATION,
            "dtype": "float64",
            "equimol": __version__,
        }
        factors: CPFactors = cached_fit(
            key,
            M,
            parities,
            lambda: fit_factors(M, parities, requested, tolerance=float(fit_tolerance), seed=int(seed), blocks=blocks),
            cache_dir,
            num_paths=1 if weight_sharing else len(self.paths),
        )
        if not factors.exact and factors.relative_error > fit_tolerance:
            warnings.warn(
                f"cp backend: rank {factors.rank} reaches relative reconstruction error "
                f"{factors.relative_error:.2e}, above fit_tolerance={fit_tolerance:g}, for {key['irreps']}; "
                "raise cp_rank for a closer (more equivariant) product",
                RuntimeWarning,
                stacklevel=2,
            )
        self.rank = factors.rank
        self.relative_error = factors.relative_error
        self.coupling_norm = M.norm().item()
        self.fit_exact = factors.exact
        self.weight_numel = self.channels * (1 if weight_sharing else len(self.paths))

        self.register_buffer("A", factors.A)
        self.register_buffer("B", factors.B)
        self.register_buffer("C", factors.C)
        self.register_buffer("term_path", factors.term_path)
        # Parity fold: with u± = x± A±, v± = y± B± the parity-coupled products are
        #   h_even = u+ v+ + u- v-  and  h_odd = u+ v- + u- v+,
        # and p = (u+ + u-)(v+ + v-) = h_even + h_odd, q = (u+ - u-)(v+ - v-) = h_even - h_odd, so
        #   z = (p @ C + s3 * (q @ C)) / 2     (s = +-1 by component parity).
        # Two elementwise products per term instead of four (the elementwise passes over [N, C, R]
        # are memory-bound and were half the time) for twice the projection GEMMs. p and q come
        # from separate, same-shaped GEMMs, so for inputs of one parity q = +-p bitwise and the
        # outputs that parity forbids cancel to exact zeros, not round-off.
        signs = [parity.to(torch.float64) for parity in parities]
        self.register_buffer("A_signed", signs[0][:, None] * factors.A)
        self.register_buffer("B_signed", signs[1][:, None] * factors.B)
        self.register_buffer("C_half", 0.5 * factors.C)
        self.register_buffer("output_signs", signs[2])
        # Gathers between the mul_ir layout and channel-major [C, d]: one copy each way.
        positions_in = component_major_index(self.irreps_in1).view(-1, self.channels).T
        positions_out = component_major_index(self.irreps_out).view(-1, self.channels).T
        self.register_buffer("gather_in1", positions_in.flatten())
        d3 = positions_out.shape[1]
        scatter = torch.empty(self.channels * d3, dtype=torch.int64)
        scatter[positions_out.flatten()] = torch.arange(self.channels * d3)
        self.register_buffer("scatter_out", scatter)
        dims = (positions_in.shape[1], len(parities[1]), d3)
        self.strategy = (
            choose_cp_strategy(*dims, self.channels, self.rank, weight_sharing) if strategy == "auto" else strategy
        )
        if self.strategy == "edge":
            # The parity-masked reconstruction, second operand first: [d2, d1 * d3]. Masked entries
            # are exact zeros, so parity-forbidden outputs stay exact zeros on this path too.
            mask = parity_mask(*parities)
            coupling = reconstruct(factors.A, factors.B, factors.C, mask).permute(1, 0, 2).reshape(dims[1], -1)
            self.register_buffer("edge_coupling", coupling.contiguous())
        self._finish_construction()

    def _product(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        count, channels = x1.shape[0], self.channels
        x = x1.index_select(-1, self.gather_in1).view(count, channels, -1)  # [N, C, d1] channel-major
        if self.strategy == "edge":
            # One coupling matrix per sample, shared by its C channels: [N, d1, d3].
            matrices = (x2 @ self.edge_coupling).view(count, x.shape[-1], -1)
            z = torch.bmm(x, matrices) * weight.view(count, channels, 1)
            return z.reshape(count, -1).index_select(-1, self.scatter_out)
        p = (x @ self.A) * (x2 @ self.B)[:, None, :]  # [N, C, R]
        q = (x @ self.A_signed) * (x2 @ self.B_signed)[:, None, :]
        if not self.weight_sharing:
            # [N, n_paths, C] -> weight of each term's path, [N, C, R]
            term_weight = weight.view(count, -1, channels).index_select(1, self.term_path).transpose(1, 2)
            p, q = p * term_weight, q * term_weight
        z = torch.addcmul(p @ self.C_half, q @ self.C_half, self.output_signs)  # [N, C, d3]
        if self.weight_sharing:
            z = z * weight.view(count, channels, 1)
        return z.reshape(count, -1).index_select(-1, self.scatter_out)

    def factored_form(self) -> FactoredProduct:
        r"""The parity fold as one CP product of rank ``2R`` (the form every fused kernel runs).

        With ``S`` the diagonal of component parities, ``p = xA``, ``q = x S_1 A``, ``s = yB``,
        ``t = y S_2 B``, the parity-coupled sums are ``h^\pm = (p s \pm q t) / 2`` (module docstring), so

        .. math:: z = w\,\big[(xA)(yB)\ \ (xS_1A)(yS_2B)\big] \begin{bmatrix} C/2 \\ C S_3/2 \end{bmatrix}:

        ``F_in = [A, S_1 A]`` ``[d1, 2R]``, ``F_attr = [B, S_2 B]`` ``[d2, 2R]``, ``F_out = [C/2; C S_3/2]``
        ``[2R, d3]``. Shared weights scale the output (one slot per channel); per-path weights
        (``weight.view(N, n_paths, C)``, slot-major) scale each rank-one term through
        ``rank_map = [term_path, term_path]``. Outputs that parity forbids come out as
        ``(ps - qt) / 2`` with ``ps = qt`` mathematically: zero to round-off, not exactly.
        """
        factor_in = torch.cat([self.A, self.A_signed], dim=1)
        factor_attr = torch.cat([self.B, self.B_signed], dim=1)
        factor_out = torch.cat([self.C_half, self.C_half * self.output_signs[None, :]], dim=0)
        if self.weight_sharing:
            split, rank_map = (WeightGroup("out", 1),), None
        else:
            split, rank_map = (WeightGroup("mid", len(self.paths), slot_major=True),), torch.cat([self.term_path] * 2)
        return FactoredProduct(
            self.irreps_in1, self.irreps_in2, self.irreps_out, factor_in, factor_attr, factor_out, rank_map, split
        )

    def extra_repr(self) -> str:
        mode = "shared" if self.weight_sharing else "per-path"
        return (
            f"{super().extra_repr()}, rank={self.rank}, weights={mode}, strategy={self.strategy!r}, "
            f"relative_error={self.relative_error:.2e}"
        )


CP_STRATEGIES = ("auto", "factors", "edge")


def choose_cp_strategy(d1: int, d2: int, d3: int, channels: int, rank: int, weight_sharing: bool) -> str:
    """``"edge"`` when weights are shared and its multiply-adds per sample are fewer, else ``"factors"``.

    Per sample, ``"edge"`` costs ``d1 d2 d3`` (the coupling matrix) plus ``C d1 d3`` (applying it to
    the ``C`` channels); ``"factors"`` costs ``2 R (C d1 + d2 + C d3)`` (parity fold: two products).
    """
    if not weight_sharing:
        return "factors"
    edge = d1 * d2 * d3 + channels * d1 * d3
    factors = 2 * rank * (channels * d1 + d2 + channels * d3)
    return "edge" if edge <= factors else "factors"


def _single(irreps) -> str:
    return " + ".join(str(ir) for _, ir in irreps)
