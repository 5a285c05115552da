r"""Radial functions of the edge length: Bessel basis, polynomial envelope and the radial MLP.

**Bessel basis** (DimeNet, NequIP), for ``n = 1 .. N`` and cutoff ``r_c``:

.. math:: b_n(r) = \sqrt{2 / r_c}\; \frac{\sin(n \pi r / r_c)}{r}

Finite at ``r -> 0`` (limit ``\sqrt{2/r_c}\, n\pi / r_c``); the ``r = 0`` case never occurs in a radius
graph (self pairs are excluded) but is still handled without NaN.

**Polynomial envelope** of exponent ``p`` (NequIP), with ``x = r / r_c``:

.. math:: u(x) = 1 - \frac{(p+1)(p+2)}{2} x^p + p(p+2) x^{p+1} - \frac{p(p+1)}{2} x^{p+2}, \quad x < 1

and ``u = 0`` for ``x >= 1``. ``u(1) = u'(1) = u''(1) = 0``, so everything multiplied by ``u`` is
C^2 across the cutoff: energies, forces (first derivative) and their derivative are continuous as an
atom leaves the radius graph. The same ``u`` gives the SPE Laplacian weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PolynomialEnvelope(nn.Module):
    """Smooth cutoff ``u(r / r_c)``, C^2 at ``r_c`` and zero beyond.

    Args:
        radial_cutoff: ``r_c`` in Å.
        exponent: ``p >= 2``; larger values keep ``u`` near 1 over a longer range.
    """

    def __init__(self, radial_cutoff: float, exponent: int = 5) -> None:
        super().__init__()
        if radial_cutoff <= 0:
            raise ValueError(f"radial_cutoff must be positive, got {radial_cutoff}")
        if int(exponent) != exponent or exponent < 2:
            raise ValueError(f"envelope_exponent must be an integer >= 2 (C^2 at the cutoff), got {exponent}")
        self.radial_cutoff = float(radial_cutoff)
        self.exponent = int(exponent)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        """``lengths`` ``[E]`` (Å) -> envelope ``[E]`` in ``[0, 1]``."""
        p = self.exponent
        x = lengths / self.radial_cutoff
        # Clamp before the polynomial so the discarded branch of `where` is finite (no NaN gradients).
        x_in = x.clamp(max=1.0)
        value = (
            1.0
            - 0.5 * (p + 1) * (p + 2) * x_in**p
            + p * (p + 2) * x_in ** (p + 1)
            - 0.5 * p * (p + 1) * x_in ** (p + 2)
        )
        return torch.where(x < 1.0, value, torch.zeros_like(value))

    def extra_repr(self) -> str:
        return f"radial_cutoff={self.radial_cutoff}, exponent={self.exponent}"


class BesselBasis(nn.Module):
    """``N`` Bessel functions ``b_n(r)`` of the edge length (fixed frequencies ``n pi / r_c``).

    Args:
        radial_cutoff: ``r_c`` in Å.
        num_basis: ``N``.
    """

    def __init__(self, radial_cutoff: float, num_basis: int = 8) -> None:
        super().__init__()
        if num_basis < 1:
            raise ValueError(f"num_radial_basis must be >= 1, got {num_basis}")
        self.radial_cutoff = float(radial_cutoff)
        self.num_basis = int(num_basis)
        frequencies = torch.arange(1, num_basis + 1, dtype=torch.float64) * math.pi / radial_cutoff
        self.register_buffer("frequencies", frequencies)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        """``lengths`` ``[E]`` (Å) -> ``[E, N]``."""
        prefactor = math.sqrt(2.0 / self.radial_cutoff)
        r = lengths.unsqueeze(-1)
        # sin(k r) / r = k sinc(k r / pi) is finite and smooth at r = 0.
        return prefactor * self.frequencies * torch.sinc(self.frequencies * r / math.pi)

    def extra_repr(self) -> str:
        return f"radial_cutoff={self.radial_cutoff}, num_basis={self.num_basis}"


class RadialMLP(nn.Module):
    r"""Per-edge tensor-product weights from the radial basis, vanishing smoothly at the cutoff.

    .. math:: w_e = u(r_e)\; \mathrm{MLP}(b(r_e))

    The envelope multiplies the *output*, so the weights (and every message, which is linear in them)
    are exactly zero at and beyond the cutoff whatever the MLP biases are.

    Args:
        num_basis: input size ``N``.
        hidden: hidden layer widths.
        num_outputs: ``weight_numel`` of the tensor product.
    """

    def __init__(self, num_basis: int, hidden: list[int], num_outputs: int) -> None:
        super().__init__()
        sizes = [num_basis, *hidden, num_outputs]
        layers: list[nn.Module] = []
        for index, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(size_in, size_out, dtype=torch.float64))
            if index < len(sizes) - 2:
                layers.append(nn.SiLU())
        self.mlp = nn.Sequential(*layers)

    def forward(self, basis: torch.Tensor, envelope: torch.Tensor) -> torch.Tensor:
        """``basis`` ``[E, N]``, ``envelope`` ``[E]`` -> ``[E, num_outputs]``."""
        return self.mlp(basis) * envelope.unsqueeze(-1)
