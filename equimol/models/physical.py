r"""The model's physical terms: fixed functions of the structure, with no trainable weights.

.. math::

    E = E_{\mathrm{learned}} + E_{\mathrm{phys}}, \qquad
    E_{\mathrm{phys}} = E_{\mathrm{ZBL}} + E_{\mathrm{D3}}   \quad (\text{each only when configured})

* ZBL screened nuclear repulsion on the radius-graph edges (:mod:`equimol.nn.zbl`);
* D3(BJ) dispersion through tad-dftd3 (:mod:`equimol.nn.dispersion`).

Training compares the whole :math:`E` (and its forces) with the labels, so the learned part fits the
residual :math:`E_{\mathrm{label}} - E_{\mathrm{phys}}`. The statistics that set the learned part's
scale and shift (``auto`` keys: least-squares shift, force RMS, fitted E0s) must be taken on that
residual too: :meth:`PhysicalTerms.energy_and_forces` evaluates :math:`E_{\mathrm{phys}}` and its forces on
one structure for :mod:`equimol.datasets.statistics`. A model file rebuilds these terms from its config,
so its energy includes them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from equimol.graph import edge_vectors, structure_to_graph
from equimol.models.config import ModelConfig
from equimol.nn.embedding import SpeciesIndex
from equimol.nn.zbl import ZBLRepulsion


class PhysicalTerms(nn.Module):
    """ZBL repulsion and D3 dispersion of a :class:`ModelConfig` (either may be off); per-atom energies in eV.

    Args:
        config: the validated model configuration.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.species = list(config.species)
        self.radial_cutoff = float(config.radial_cutoff)
        self.species_index = SpeciesIndex(self.species)
        self.pair_repulsion = None
        if config.pair_repulsion == "zbl":
            self.pair_repulsion = ZBLRepulsion(
                self.species,
                config.radial_cutoff,
                config.zbl_inner,
                config.zbl_outer,
                config.zbl_inner_fraction,
                config.zbl_outer_fraction,
            )
        self.dispersion = None
        if config.dispersion is not None:
            from equimol.nn.dispersion import D3Dispersion

            self.dispersion = D3Dispersion(**config.dispersion)
        self.description = {
            "pair_repulsion": config.pair_repulsion,
            "zbl": [config.zbl_inner, config.zbl_outer, config.zbl_inner_fraction, config.zbl_outer_fraction],
            "dispersion": config.dispersion,
            "species": self.species,
            "radial_cutoff": self.radial_cutoff,
        }

    @staticmethod
    def wanted(config: ModelConfig) -> bool:
        """Whether ``config`` has any physical term."""
        return config.pair_repulsion != "none" or config.dispersion is not None

    def pair_energies(
        self, lengths: torch.Tensor, element_index: torch.Tensor, sender: torch.Tensor, receiver: torch.Tensor
    ) -> torch.Tensor:
        """``[n]`` ZBL energies (eV; zeros without ZBL) from ``[E]`` radius-graph edge lengths (Å), ``[n]``
        species indices and the ``[E]`` edge ends: a function of the edges only, like the learned part."""
        energy = lengths.new_zeros(element_index.shape[0])
        if self.pair_repulsion is not None:
            energy = energy + self.pair_repulsion(lengths, element_index, sender, receiver)
        return energy

    def dispersion_energies(
        self, graph, positions: torch.Tensor, cell: torch.Tensor, node_graph: torch.Tensor
    ) -> torch.Tensor | None:
        """``[n]`` D3 energies (eV), or None without D3: D3 builds its own pairs from positions and cell
        (its cutoffs reach far beyond the radius graph).

        Args:
            graph: the model's input graph (``atomic_numbers``, ``pbc``).
            positions: ``[n, 3]`` Å and cell ``[B, 3, 3]`` Å, strained when the model computes stress.
            node_graph: ``[n]`` structure of each atom.
        """
        if self.dispersion is None:
            return None
        return self.dispersion(graph.atomic_numbers, positions, cell, graph.pbc.view(-1, 3), node_graph)

    def forward(
        self,
        graph,
        positions: torch.Tensor,
        cell: torch.Tensor,
        node_graph: torch.Tensor,
        lengths: torch.Tensor,
        element_index: torch.Tensor,
    ) -> torch.Tensor:
        """Per-atom energies ``[n]`` (eV) of both terms (arguments of :meth:`pair_energies` and
        :meth:`dispersion_energies`; ``graph.edge_index`` gives the edge ends)."""
        sender, receiver = graph.edge_index
        energy = self.pair_energies(lengths, element_index, sender, receiver)
        dispersion = self.dispersion_energies(graph, positions, cell, node_graph)
        return energy if dispersion is None else energy + dispersion

    def energy_and_forces(
        self, positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray, pbc: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """Energy (eV) and forces ``[n, 3]`` (eV/Å) of one structure (for dataset statistics).

        Call it on a float64 instance (as built): the graph is built in float64.

        Args:
            positions: ``[n, 3]`` Å; numbers ``[n]``; cell ``[3, 3]`` Å (rows); pbc ``[3]``.
        """
        graph = structure_to_graph(positions, numbers, cell, pbc, self.radial_cutoff, torch.float64)
        with torch.enable_grad():
            pos = graph.pos.detach().requires_grad_(True)
            node_graph = torch.zeros(pos.shape[0], dtype=torch.long)
            cell_tensor = graph.cell.view(-1, 3, 3).double()
            lengths = edge_vectors(pos, graph.edge_index, graph.cell_offsets, cell_tensor, node_graph).norm(dim=-1)
            energy = self(graph, pos, cell_tensor, node_graph, lengths, self.species_index(graph.atomic_numbers)).sum()
            (gradient,) = torch.autograd.grad(energy, pos, allow_unused=True, materialize_grads=True)
        return float(energy.detach()), -gradient.detach().numpy()
