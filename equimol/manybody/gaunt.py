r"""``many_body: gaunt``: a MACE-style correlation block built on a sphere grid by repeated squaring.

For each node ``n`` and channel ``u`` the features ``x^{(i)}_{nu}`` (irreps ``C x (0e, 1o, 2e, ...)``)
become one sphere function with per-(element, channel, irrep) input weights ``w^in``:

.. math:: f_{nu}(s) = \sqrt{4\pi} \sum_i w^{in}_{e_n u i}\, x^{(i)}_{nu} \cdot Y_{l_i}(s)

(component-normalized harmonics). Its powers are projected onto the output irreps, weighted per
(element, correlation order, channel, output irrep) and summed over the orders ``nu = 1..N``:

.. math::

    B^{(i_3)}_{nu m_3} = \sum_{\nu = 1}^{N} w^{out}_{e_n \nu u i_3}\, n_{\nu, l_3}\,
        \frac{1}{4\pi} \int_{S^2} f_{nu}^{\,\nu}\, \sqrt{4\pi}\, Y_{l_3 m_3}\, d\Omega .

For ``nu = 2`` the integral is the Gaunt product of ``x`` with itself (``gaunt`` backend with unit
weights, before normalization), and for ``nu = 3, 4`` the product composed with ``x`` again: no
degree is truncated in between, so ``x^3 = (x^2) x`` exactly. The powers are taken pointwise on a
Gauss-Legendre x uniform grid exact for degree ``N L + L_out`` (:mod:`~equimol.tp.sphere_grid`):
``f^2 = f f``, ``f^3 = f^2 f``, ``f^4 = f^2 f^2`` (repeated squaring), with GEMMs only. (An FFT
convolution of Fourier grids gives the same powers; it took 10 to 15x the grid's forward+backward
time at L = 1..3 on a 2-core CPU, ``benchmarks/many_body_vs_mace_cpu.md`` as of commit 5e0abf7, and was removed.)
Cost O(N^2 L^3) per channel for input degree
``L``, whatever the number of coupling paths.

``n_{nu, l3}`` gives unit mean square per output component when the input coefficients are
independent standard normal and ``w^in = 1``, computed exactly: ``f`` is then a Gaussian field with
covariance ``K(s.t) = sum_i (2 l_i + 1) P_{l_i}(s.t)``, Isserlis' theorem gives
``E[f(s)^nu f(t)^nu] = sum_j c_{nu j}^2 j! K(1)^{nu - j} K^j`` (``c`` the Hermite coefficients of ``x^nu``)
and Funk-Hecke turns the mean square into ``1/2 int_{-1}^1 E[...] P_{l3}(x) dx`` (Gauss-Legendre).

**Compared with MACE's symmetric contraction.** MACE weighs every generalized CG coupling path
``(l_1, ..., l_nu) -> l3`` of the symmetric product ``A^nu`` separately (a weight per element,
channel, path and order), which spans all equivariant symmetric polynomials of degree ``nu`` in
``A`` per channel. The Gaunt self-product spans a subspace of it: per output degree and order one
fixed combination of those paths (the sphere-function power), steered only by the ``L + 1``
per-degree input weights and one output weight. It has only parity ``(-1)^l`` outputs (no
pseudotensors, nothing odd in ``l1 + ... + l3``, e.g. no ``1o x 1o -> 1e``), and its weights enter
the input nonlinearly (``w^in`` to the power ``nu``). In exchange its cost does not grow with the
number of paths, which for ``nu = 3`` grows like ``L^6`` and more.

Shapes: ``x`` ``[N, irreps.dim]``, ``element_index`` ``[N]`` long, output ``[N, irreps_out.dim]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from equimol.manybody.registry import register_many_body
from equimol.nn.linear import natural_irreps
from equimol.tp.gaunt import SlotLayout
from equimol.tp.irreps import IrrepsLike, from_channel_major, parse_irreps, to_feature_major, uniform_multiplicity
from equimol.tp.sphere_grid import analyze_on_grid, grid_factors, product_grid_size, synthesize_on_grid
from equimol.utils.dtype import resolve_dtype
from equimol.utils.tracing import tracing

MAX_CORRELATION = 4
#: ``"auto"`` is ``"grid"``, the one strategy; both names are accepted so that configs keep loading.
STRATEGIES = ("auto", "grid")


def power_normalization(degrees: list[int], correlation: int, l3: int) -> float:
    """``n_{nu, l3}``: inverse RMS of ``(1/4pi) int f^nu Y^c_{l3}`` for unit-normal coefficients.

    Zero when no power of the input degrees reaches ``l3``.
    """
    nu = correlation
    n_nodes = (nu * max(degrees) + l3) // 2 + 1
    nodes, weights = np.polynomial.legendre.leggauss(n_nodes)
    covariance = sum(np.polynomial.legendre.legval(nodes, np.eye(l + 1)[l]) * (2 * l + 1) for l in degrees)
    variance = float(sum(2 * l + 1 for l in degrees))
    moment = np.zeros_like(nodes)
    for j in range(nu % 2, nu + 1, 2):
        hermite = math.factorial(nu) / (math.factorial(j) * math.factorial((nu - j) // 2) * 2 ** ((nu - j) // 2))
        moment += hermite**2 * math.factorial(j) * variance ** (nu - j) * covariance**j
    legendre = np.polynomial.legendre.legval(nodes, np.eye(l3 + 1)[l3])
    mean_square = 0.5 * float(np.sum(weights * moment * legendre))
    # The mean square is a sum of squares: tiny values are round-off of an unreachable degree.
    return 1.0 / math.sqrt(mean_square) if mean_square > 1e-12 * variance**nu else 0.0


class GauntSelfProduct(nn.Module):
    """Sum over ``nu = 1..correlation`` of weighted Gaunt powers ``x^nu`` (see the module docstring).

    Args:
        irreps: input irreps, ``C`` channels of parity ``(-1)^l`` irreps (e.g. ``"16x0e + 16x1o + 16x2e"``).
        correlation: highest order ``N``, 1 to 4 (MACE's ``correlation``; order 1 is the linear term).
        num_elements: number of chemical elements; weights are then per element and ``forward``
            needs ``element_index``. None: one set of (shared) weights.
        irreps_out: output irreps with the same ``C`` and parity ``(-1)^l`` (default ``irreps``).
        strategy: ``"grid"`` (Gauss-Legendre x uniform grid exact for degree ``correlation * L + L_out``;
            powers pointwise, GEMMs only) or ``"auto"`` (the same).
        dtype, device: module dtype and device; constants are built in float64.

    Attributes:
        weight_in: ``[num_elements or 1, C, len(irreps)]``, initialised to one.
        weight_out: ``[num_elements or 1, correlation, C, len(irreps_out)]``, normal with variance
            ``1 / correlation`` (unit output variance at initialisation).
        normalization: ``[correlation, len(irreps_out)]`` buffer, ``n_{nu, l3}``.
    """

    def __init__(
        self,
        irreps: IrrepsLike,
        correlation: int,
        num_elements: int | None = None,
        irreps_out: IrrepsLike | None = None,
        *,
        strategy: str = "auto",
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.irreps_in = parse_irreps(irreps, "irreps")
        self.irreps_out = parse_irreps(irreps if irreps_out is None else irreps_out, "irreps_out")
        self.channels = uniform_multiplicity(self.irreps_in, "irreps")
        if uniform_multiplicity(self.irreps_out, "irreps_out") != self.channels:
            raise ValueError(f"irreps_out={self.irreps_out} must have the {self.channels} channels of irreps")
        for name, group in (("irreps", self.irreps_in), ("irreps_out", self.irreps_out)):
            for _, ir in group:
                if ir.p != (-1) ** ir.l:
                    raise ValueError(
                        f"{name} contains {ir}, but the Gaunt self-product only serves parity (-1)^l irreps "
                        "(0e, 1o, 2e, ...); use a CG symmetric contraction instead"
                    )
        if not isinstance(correlation, int) or not 1 <= correlation <= MAX_CORRELATION:
            raise ValueError(f"correlation={correlation!r} must be an integer from 1 to {MAX_CORRELATION}")
        if num_elements is not None and (not isinstance(num_elements, int) or num_elements < 1):
            raise ValueError(f"num_elements={num_elements!r} must be a positive integer or None")
        self.correlation = correlation
        self.num_elements = num_elements
        self.layout_in, self.layout_out = SlotLayout(self.irreps_in), SlotLayout(self.irreps_out)
        lmax, lmax_out = self.layout_in.lmax, self.layout_out.lmax
        top = correlation * lmax
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy={strategy!r} is not one of {STRATEGIES} for GauntSelfProduct")
        self.strategy = "grid"
        self.n_theta, self.n_phi = product_grid_size(top + lmax_out)
        factors, factors_out = (
            grid_factors(lmax, self.n_theta, self.n_phi),
            grid_factors(lmax_out, self.n_theta, self.n_phi),
        )
        slot_index, out_slot_index = factors.index, factors_out.index
        self.register_buffer("synthesis_theta", factors.synthesis_theta.transpose(1, 2).contiguous().clone())
        self.register_buffer("synthesis_phi", factors.synthesis_phi.T.contiguous().clone())
        self.register_buffer("analysis_phi", factors_out.analysis_phi.T.contiguous().clone())
        self.register_buffer("analysis_theta", factors_out.analysis_theta.transpose(1, 2).contiguous().clone())
        slot_of_canonical = torch.empty((lmax_out + 1) ** 2 + 1, dtype=torch.long)
        slot_of_canonical[out_slot_index.flatten()] = torch.arange(out_slot_index.numel())
        self.register_buffer("source", self.layout_in.source_index(slot_index), persistent=False)
        self.register_buffer("output_index", slot_of_canonical[self.layout_out.canonical_index], persistent=False)
        self.register_buffer("irrep_of_component_in", self.layout_in.irrep_of_component, persistent=False)
        self.register_buffer("irrep_of_component_out", self.layout_out.irrep_of_component, persistent=False)
        normalization = [
            [power_normalization(self.layout_in.degrees, nu, ir.l) for _, ir in self.irreps_out]
            for nu in range(1, correlation + 1)
        ]
        self.register_buffer("normalization", torch.tensor(normalization, dtype=torch.float64))
        # (4 pi)^((nu - 1) / 2) turns the orthonormal-harmonic integral into the component-normalized one.
        scale = [[(4 * math.pi) ** ((nu - 1) / 2)] for nu in range(1, correlation + 1)]
        self.register_buffer("output_scale", torch.tensor(scale, dtype=torch.float64) * self.normalization)
        sets = num_elements or 1
        self.weight_in = nn.Parameter(torch.ones(sets, self.channels, len(self.irreps_in), dtype=torch.float64))
        self.weight_out = nn.Parameter(
            torch.randn(sets, correlation, self.channels, len(self.irreps_out), dtype=torch.float64)
            / math.sqrt(correlation)
        )
        self._float64_constants = {n: b.detach().clone() for n, b in self.named_buffers() if b.is_floating_point()}
        self.to(dtype=resolve_dtype(dtype), device=device)

    def _apply(self, fn, recurse: bool = True):
        # As in TensorProductBackend: constants come back from float64 masters after a dtype change.
        super()._apply(fn, recurse)
        for name, master in getattr(self, "_float64_constants", {}).items():
            current = self._buffers[name]
            self._buffers[name] = master.to(device=current.device, dtype=current.dtype)
        return self

    def _element_weights(self, element_index: torch.Tensor | None, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_elements is None:
            if element_index is not None:
                raise ValueError("element_index was given but this GauntSelfProduct has num_elements=None")
            return self.weight_in.expand(count, -1, -1), self.weight_out.expand(count, -1, -1, -1)
        if element_index is None:
            raise ValueError(
                f"element_index [N] is required: this GauntSelfProduct has num_elements={self.num_elements}"
            )
        if element_index.shape != (count,) or element_index.dtype != torch.long:
            raise ValueError(
                f"element_index has shape {tuple(element_index.shape)} and dtype {element_index.dtype}; "
                f"expected [{count}] int64"
            )
        if count and not tracing() and (element_index.min() < 0 or element_index.max() >= self.num_elements):
            raise ValueError(f"element_index values must lie in 0..{self.num_elements - 1}")
        return self.weight_in[element_index], self.weight_out[element_index]

    def powers(self, x: torch.Tensor, weight_in: torch.Tensor) -> torch.Tensor:
        """Unnormalized ``int f^nu Y_c dOmega`` for ``nu = 1..correlation``, ``[N, correlation, C, D_out]``.

        Orthonormal ``Y`` and ``f`` without its ``sqrt(4 pi)``; ``x`` ``[N, irreps.dim]``, ``weight_in``
        ``[N, C, len(irreps)]``; output components in the irreps_out order, channel-major.
        """
        count = x.shape[0]
        coefficients = to_feature_major(x, self.irreps_in) * weight_in.permute(2, 0, 1)[self.irrep_of_component_in]
        slots = self.layout_in.rows_to_slots(coefficients.view(coefficients.shape[0], -1), self.source)
        values = synthesize_on_grid(slots, self.synthesis_theta, self.synthesis_phi)  # [G, N * C]
        projected = [
            analyze_on_grid(power, self.analysis_phi, self.analysis_theta).index_select(0, self.output_index)
            for power in self._repeated_squaring(values)
        ]  # each [D_out, N * C]
        return torch.stack(projected, dim=0).view(self.correlation, -1, count, self.channels).permute(2, 0, 3, 1)

    def _repeated_squaring(self, values: torch.Tensor) -> list[torch.Tensor]:
        """``[f, f^2, f^3, f^4][:correlation]`` pointwise: ``f^3 = f^2 f``, ``f^4 = (f^2)^2``."""
        powers = [values]
        if self.correlation >= 2:
            powers.append(values * values)
        if self.correlation >= 3:
            powers.append(powers[1] * values)
        if self.correlation >= 4:
            powers.append(powers[1] * powers[1])
        return powers

    def forward(self, x: torch.Tensor, element_index: torch.Tensor | None = None) -> torch.Tensor:
        """The correlation block.

        Args:
            x: ``[N, irreps.dim]`` node features (e.g. MACE's ``A`` features).
            element_index: ``[N]`` int64 element of each node, required when ``num_elements`` is set.

        Returns:
            ``[N, irreps_out.dim]``.
        """
        if x.dim() != 2 or x.shape[-1] != self.irreps_in.dim:
            raise ValueError(
                f"x has shape {tuple(x.shape)}; expected [N, {self.irreps_in.dim}] for irreps={self.irreps_in}"
            )
        weight_in, weight_out = self._element_weights(element_index, x.shape[0])
        if x.shape[0] == 0:
            # No nodes: the reshapes cannot take an empty batch; keep the autograd graph.
            return x.new_zeros(0, self.irreps_out.dim) + 0.0 * (x.sum() + weight_in.sum() + weight_out.sum())
        powers = self.powers(x, weight_in)  # [N, nu, C, D_out]
        scale = (weight_out * self.output_scale[:, None, :])[..., self.irrep_of_component_out]
        return from_channel_major((powers * scale).sum(dim=1), self.irreps_out)

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in} -> {self.irreps_out}, correlation={self.correlation}, num_elements={self.num_elements}"
        )


@register_many_body("gaunt")
def build(channels: int, lmax: int, correlation: int, num_elements: int) -> GauntSelfProduct:
    """:class:`GauntSelfProduct` on ``natural_irreps(channels, lmax)``, built in float64 (the registry's builder)."""
    return GauntSelfProduct(natural_irreps(channels, lmax), correlation, num_elements=num_elements, dtype=torch.float64)
