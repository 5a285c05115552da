r"""D3(BJ) dispersion (Grimme et al. 2010, Becke-Johnson damping 2011) from tad-dftd3, on a neighbor list.

For atoms :math:`i, j` (periodic images included) at distance :math:`r_{ij}`:

.. math::

    E = -\frac12 \sum_{i} \sum_{j \ne i,\; r_{ij} \le r_c}
        \Big( s_6 \frac{C_6^{ij}}{r_{ij}^6 + R_{ij}^6} + s_8 \frac{C_8^{ij}}{r_{ij}^8 + R_{ij}^8} \Big),
    \qquad R_{ij} = a_1 \sqrt{C_8^{ij} / C_6^{ij}} + a_2,

with :math:`C_8^{ij} = 3 Q_i Q_j C_6^{ij}` (:math:`Q` the :math:`\langle r^4\rangle/\langle r^2\rangle`
ratios) and :math:`C_6^{ij} = \sum_{ab} w_{ia} w_{jb} C_6^{\mathrm{ref}}(Z_i, Z_j, a, b)`, Gaussian
weights :math:`w` of the coordination numbers
:math:`\mathrm{CN}_i = \sum_{j,\, r_{ij} \le r_{cn}} (1 + e^{-k_1 (R^{cov}_{ij} / r_{ij} - 1)})^{-1}`.
Every ingredient is tad-dftd3's (reference :math:`C_6`, radii, counting and weighting functions,
rational damping, functional parameters ``tad_dftd3.param.get_functional_params(xc, "bj")``); what
this module adds is the sum over a neighbor list, so that periodic cells (images, stress) work:
tad-dftd3 sums over the atoms it is given. It works in atomic units (Bohr, Hartree); positions are
converted from Å and energies to eV with tad-mctc's constants. The per-atom energies split each pair
half and half. Three-body (ATM, ``s9``) terms are not included.

The neighbor list is built in the forward pass, so the term cannot be traced: ``trainer.compile_step``
trains such a model eagerly (with a warning), and ``equimol export --format aotinductor`` refuses it.

For a molecule smaller than the cutoffs the sum is exactly ``tad_dftd3.dftd3`` with ``s9 = 0``
(``tests/test_dispersion.py``). Defaults: ``cutoff`` 60 Bohr (31.75 Å) for the dispersion sum and
``cn_cutoff`` 40 Bohr (21.17 Å) for the coordination numbers, tad-dftd3's (and s-dftd3's).

Configuration (``model.dispersion``, or ``EquimolCalculator(dispersion="d3", xc=..., damping=...)``)::

    dispersion: {kind: d3, xc: pbe, damping: bj, cutoff: 31.75, cn_cutoff: 21.17}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from equimol.config_fields import check_section, option
from equimol.utils.tracing import tracing

KINDS = ("d3",)
DAMPINGS = ("bj",)  # tad-dftd3 implements the rational (Becke-Johnson) damping
BOHR = 0.52917721  # Å, for the defaults below only; conversions use tad-mctc's AA2AU


@dataclass
class DispersionConfig:
    """``model.dispersion``: the D3 options (module docstring)."""

    kind: str = option("d3", "dispersion correction", choices=KINDS)
    xc: str = option("pbe", "functional whose D3 damping parameters tad-dftd3 uses")
    damping: str = option("bj", "damping function (rational, Becke-Johnson)", choices=DAMPINGS)
    cutoff: float = option(60.0 * BOHR, "Å, cutoff of the dispersion sum (60 Bohr)", gt=0)
    cn_cutoff: float = option(40.0 * BOHR, "Å, cutoff of the coordination numbers (40 Bohr)", gt=0)


DEFAULTS = asdict(DispersionConfig())


def check_options(options: Mapping) -> dict:
    """``model.dispersion`` completed with :data:`DEFAULTS` and checked; a ValueError names the key.

    Raises:
        ValueError: not a mapping, an unknown key, kind or damping, a functional tad-dftd3 has no
            parameters for, or a non-positive cutoff; tad-dftd3 missing (names the ``d3`` extra).
    """
    check_section(DispersionConfig, options, "dispersion")
    values = {**DEFAULTS, **options}
    for key in ("cutoff", "cn_cutoff"):
        values[key] = float(values[key])
    functional_parameters(values["xc"], values["damping"])
    return values


def functional_parameters(xc: str, damping: str) -> dict[str, float]:
    """tad-dftd3's damping parameters (``s6``, ``s8``, ``a1``, ``a2``) of functional ``xc``, three-body off."""
    try:
        import tad_dftd3
    except ImportError as error:
        raise ValueError(f"D3 dispersion needs tad-dftd3 ({error}): pip install 'equimol[d3]'") from error
    if not isinstance(xc, str):
        raise ValueError(f"xc must be a functional name such as 'pbe', got {xc!r}")
    try:
        values = tad_dftd3.param.get_functional_params(xc, damping=damping, dtype=torch.float64)
    except (KeyError, ValueError) as error:
        raise ValueError(f"xc={xc!r}: tad-dftd3 has no D3({damping}) parameters for it ({error})") from error
    return {key: float(values[key]) for key in ("s6", "s8", "a1", "a2") if key in values}


class D3Dispersion(nn.Module):
    """Per-atom D3(BJ) energies (eV) of a batch of structures; see the module docstring.

    Args:
        kind, xc, damping, cutoff, cn_cutoff: the options of :func:`check_options` (cutoffs in Å).
    """

    def __init__(self, **options) -> None:
        super().__init__()
        import tad_dftd3
        from tad_mctc.data import radii
        from tad_mctc.units import AA2AU, AU2EV

        self.options = check_options(options)
        self.parameters_ = functional_parameters(self.options["xc"], self.options["damping"])
        self.length_to_bohr, self.hartree_to_ev = float(AA2AU), float(AU2EV)
        # tad-dftd3's tables, indexed by atomic number, kept in float64 (a float32 model still sums D3 in
        # float64); rebuilt from tad-dftd3 on construction, never stored in model files
        self.reference = tad_dftd3.reference.Reference(dtype=torch.float64)
        self.register_buffer("covalent_radius", radii.COV_D3(dtype=torch.float64), persistent=False)
        self.register_buffer("r4r2", tad_dftd3.data.R4R2(dtype=torch.float64), persistent=False)
        self.max_number = int(self.reference.c6.shape[0]) - 1

    def _apply(self, fn, recurse=True):
        # keep the tables in float64 when the model is cast (.to(float32)); follow its device
        super()._apply(fn, recurse)
        for name in ("covalent_radius", "r4r2"):
            setattr(self, name, getattr(self, name).double())
        self.reference = self.reference.to(device=self.r4r2.device)
        return self

    def extra_repr(self) -> str:
        return f"xc={self.options['xc']}, damping={self.options['damping']}, cutoff={self.options['cutoff']:.4g} Å"

    def pairs(self, positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, node_graph: torch.Tensor):
        """``(sender [P], receiver [P], cell_offsets [P, 3])`` within the larger cutoff, both directions.

        Non-periodic structures: every pair of the structure (the cutoffs then act as masks, as in
        tad-dftd3); periodic ones: vesin's neighbor list with images. D3's cutoffs hold thousands of
        neighbors per atom (about 10^4 at 31.75 Å in a solid), far beyond what a model graph may hold,
        so the list is built here, without :func:`equimol.graph.neighbor_list`'s size check.
        """
        import vesin

        from equimol.structure_checks import StructureError

        reach = max(self.options["cutoff"], self.options["cn_cutoff"])
        senders, receivers, offsets = [], [], []
        with torch.no_grad():
            counts = torch.bincount(node_graph, minlength=cell.shape[0]).tolist()
            start = 0
            for index, count in enumerate(counts):
                if bool(pbc[index].any()):
                    atoms = positions[start : start + count].detach().double().cpu().numpy()
                    box = cell[index].detach().double().cpu().numpy()
                    if abs(np.linalg.det(box)) <= 1e-12 * np.prod(np.linalg.norm(box, axis=1)):
                        raise StructureError(f"D3 of structure {index}: its periodic cell {box.tolist()} has no volume")
                    periodic = pbc[index].cpu().numpy().tolist()
                    lists = vesin.NeighborList(cutoff=reach, full_list=True)
                    i, j, shift = lists.compute(points=atoms, box=box, periodic=periodic, quantities="ijS")
                else:
                    i, j = np.nonzero(~np.eye(count, dtype=bool))
                    shift = np.zeros((len(i), 3), dtype=np.int64)
                senders.append(torch.as_tensor(i + start))
                receivers.append(torch.as_tensor(j + start))
                offsets.append(torch.as_tensor(shift))
                start += count
        device = positions.device
        return (
            torch.cat(senders).long().to(device),
            torch.cat(receivers).long().to(device),
            torch.cat(offsets).to(device=device, dtype=positions.dtype),
        )

    def forward(
        self,
        numbers: torch.Tensor,
        positions: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
        node_graph: torch.Tensor,
    ) -> torch.Tensor:
        """Per-atom energies ``[n]`` (eV) of atoms ``numbers [n]`` at ``positions [n, 3]`` (Å) in structures
        ``node_graph [n]`` with cells ``[B, 3, 3]`` (rows, Å) and ``pbc [B, 3]``."""
        if tracing():  # the pairs come from vesin on the positions' values
            raise RuntimeError("D3 dispersion (model.dispersion) cannot be traced: it builds its neighbor list here")
        if int(numbers.max()) > self.max_number:
            raise ValueError(f"D3 has no parameters for atomic numbers above {self.max_number}")
        from tad_dftd3.model import gaussian_weight, weight_references
        from tad_mctc.ncoord import exp_count

        sender, receiver, offsets = self.pairs(positions, cell, pbc, node_graph)
        shifts = torch.einsum("pk,pkl->pl", offsets, cell[node_graph[sender]])
        distance = (positions[receiver] - positions[sender] + shifts).norm(dim=-1).double() * self.length_to_bohr
        bohr = self.length_to_bohr
        # coordination numbers (tad-mctc's counting function), D3 weights and C6 (tad-dftd3's reference)
        in_cn = distance <= self.options["cn_cutoff"] * bohr
        radius = self.covalent_radius[numbers]
        counts = exp_count(distance[in_cn], radius[sender[in_cn]] + radius[receiver[in_cn]])
        cn = distance.new_zeros(numbers.shape[0]).index_add(0, receiver[in_cn], counts)
        weights = weight_references(numbers, cn, self.reference, gaussian_weight)  # [n, 7]
        in_range = distance <= self.options["cutoff"] * bohr
        sender, receiver, distance = sender[in_range], receiver[in_range], distance[in_range]
        blocks = self.reference.c6[numbers[sender], numbers[receiver]]  # [P, 7, 7]
        c6 = torch.einsum("pa,pab,pb->p", weights[sender], blocks, weights[receiver])
        qq = 3.0 * self.r4r2[numbers[sender]] * self.r4r2[numbers[receiver]]
        parameters = self.parameters_
        radius_bj = parameters["a1"] * torch.sqrt(qq) + parameters["a2"]
        pair = parameters.get("s6", 1.0) * c6 / (distance.pow(6) + radius_bj.pow(6))
        pair = pair + parameters["s8"] * c6 * qq / (distance.pow(8) + radius_bj.pow(8))
        energy = distance.new_zeros(numbers.shape[0]).index_add(0, receiver, -0.5 * pair)
        return (self.hartree_to_ev * energy).to(positions.dtype)
