r"""The potential: an E(3)-equivariant message-passing model with a swappable tensor-product backend.

.. math::

    h^{(0)}_i = \mathrm{Embed}(Z_i) \,[+\, \mathrm{SPE}_i], \qquad
    h^{(t+1)} = \mathrm{Layer}_t(h^{(t)}), \qquad
    E = \sum_i \varepsilon_i\big(h^{(1)}_{i, 0e}, \dots, h^{(T)}_{i, 0e}\big) \,[+\, E_{\mathrm{phys}}]

Each layer is either ``interaction: gated`` (TP convolution, gate, residual, then an optional residual
many-body block: :mod:`equimol.nn.interaction`, :mod:`equimol.nn.many_body`) or ``interaction:
product_basis`` (MACE's layer: TP messages form an atomic basis up to ``message_lmax``, a many-body
product with per-element weights follows, plus a self-connection: :mod:`equimol.nn.product_basis`).
The read-out takes the last layer's scalars (``readout: final``) or every layer's (``per_layer``;
:mod:`equimol.nn.readout`). SPE: :mod:`equimol.nn.spe`. The optional physical terms, the switched ZBL
pair repulsion ``model.pair_repulsion: zbl`` (:mod:`equimol.nn.zbl`) and D3 dispersion
``model.dispersion: {kind: d3, ...}`` (:mod:`equimol.nn.dispersion`), add per-atom energies
:math:`E_{\mathrm{phys}}` for any backend (:mod:`equimol.models.physical`).
Forces and stress come from autograd:

.. math::

    F_i = -\frac{\partial E}{\partial x_i}, \qquad
    \sigma = \frac{1}{V} \frac{\partial E}{\partial \varepsilon}\Big|_{\varepsilon = 0}

where the symmetric strain ``epsilon`` deforms positions and cell as ``x -> x (I + epsilon)``,
``h -> h (I + epsilon)`` (rows are vectors). This is ASE's convention (``stress = dE/d(strain) / V``,
positive = tensile, eV/Å^3). For a structure without periodic directions the stress is defined as
zero; for a periodic structure whose cell has zero volume it does not exist and is a
:class:`~equimol.structure_checks.StructureError` (zeros would read as a relaxed cell).

**Per-atom virials.** The energy depends on positions only through the edge vectors ``r_e``
(:func:`equimol.graph.edge_vectors`), so with ``g_e = dE/dr_e`` the global virial is
``W = sum_k x_k (x) F_k = -sum_e r_e (x) g_e`` (eV; ``W = -V sigma`` for a periodic structure). Each
edge's term is split half to its sender and half to its receiver:

.. math::

    W_i = -\tfrac12 \sum_{e \ni i} \mathbf{r}_e \otimes \frac{\partial E}{\partial \mathbf{r}_e},
    \qquad \sum_i W_i = W

(``compute_virials=True``, ``atom_virial`` ``[n, 3, 3]`` eV; LAMMPS's ``compute stress/atom`` and
ASE's per-atom ``stresses = -W_i / V`` use the same split). Each ``W_i`` need not be symmetric; their sum is.

**Input**: a torch-geometric ``Data``/``Batch`` in the format of :mod:`equimol.graph`
(``pos``, ``atomic_numbers``, ``cell [B, 3, 3]``, ``pbc [B, 3]``, ``edge_index = [sender, receiver]``,
``cell_offsets``, ``batch``), built with the model's ``radial_cutoff`` and ``dtype``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from e3nn import o3
from torch import nn

from equimol.graph import edge_vectors
from equimol.models.config import ModelConfig
from equimol.models.physical import PhysicalTerms
from equimol.nn.embedding import SpeciesEmbedding, SpeciesIndex
from equimol.nn.interaction import InteractionBlock
from equimol.nn.linear import natural_irreps
from equimol.nn.many_body import ManyBodyBlock
from equimol.nn.product_basis import ProductBasisInteraction
from equimol.nn.radial import BesselBasis, PolynomialEnvelope
from equimol.nn.readout import EnergyReadout
from equimol.nn.spe import StablePositionalEncoding
from equimol.structure_checks import StructureError
from equimol.utils.tracing import tracing

_REQUIRED_FIELDS = ("pos", "atomic_numbers", "cell", "pbc", "edge_index", "cell_offsets")


class EdgeTerms(NamedTuple):
    """Per-edge inputs of the layers: ``lengths`` ``[E]`` Å, ``envelope`` ``[E]``, ``basis`` ``[E, num_radial_basis]``,
    ``edge_sh`` ``[E, (sh_lmax + 1)^2]`` (component-normalized spherical harmonics of the unit vectors)."""

    lengths: torch.Tensor
    envelope: torch.Tensor
    basis: torch.Tensor
    edge_sh: torch.Tensor


class Potential(nn.Module):
    """Equivariant interatomic potential; build it with :func:`equimol.models.build_model`.

    Attributes:
        config: the validated :class:`ModelConfig`.
        radial_cutoff: Å; graphs must be built with it.
        species: atomic numbers the model knows.
        dtype: floating dtype of the parameters (and of the expected ``pos``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.radial_cutoff = float(config.radial_cutoff)
        self.species = list(config.species)
        self.irreps = natural_irreps(config.channels, config.lmax)
        self.sh_irreps = o3.Irreps.spherical_harmonics(config.sh_lmax)
        num_species = len(self.species)
        self.species_index = SpeciesIndex(self.species)
        self.embedding = SpeciesEmbedding(num_species, config.channels)
        self.envelope = PolynomialEnvelope(config.radial_cutoff, config.envelope_exponent)
        self.radial_basis = BesselBasis(config.radial_cutoff, config.num_radial_basis)
        if config.spe.enabled:
            scale = config.spe.spectral_scale or 2.0 * config.avg_num_neighbors
            self.spe = StablePositionalEncoding(
                num_species,
                config.channels,
                num_filters=config.spe.num_filters,
                polynomial_degree=config.spe.polynomial_degree,
                spectral_scale=scale,
                hidden=config.spe.hidden,
                mode=config.spe.mode,
                avg_num_neighbors=config.avg_num_neighbors,
            )
        else:
            self.spe = None
        self.interactions = nn.ModuleList(self._interaction(config, num_species, i) for i in range(config.num_layers))
        if config.many_body != "none" and config.interaction == "gated":
            self.many_body = nn.ModuleList(
                ManyBodyBlock(config.many_body, config.channels, config.lmax, config.correlation, num_species)
                for _ in range(config.num_layers)
            )
        else:
            self.many_body = None
        self.physical_terms = PhysicalTerms(config) if PhysicalTerms.wanted(config) else None
        self.readout = EnergyReadout(
            config.channels,
            config.readout_hidden,
            energy_scale=config.per_species("energy_scale", 1.0),
            energy_shift=config.per_species("energy_shift", 0.0),
            e0s=config.per_species("e0s", 0.0),
            num_linear_heads=config.num_layers - 1 if config.readout == "per_layer" else 0,
        )

    @staticmethod
    def _interaction(config: ModelConfig, num_species: int, index: int) -> nn.Module:
        common = dict(
            sh_lmax=config.sh_lmax,
            num_radial_basis=config.num_radial_basis,
            radial_mlp_hidden=config.radial_mlp_hidden,
            avg_num_neighbors=config.avg_num_neighbors,
            tp_backend=config.tp_backend,
            tp_options=config.tp_options,
            self_connection=config.self_connection,
            num_elements=num_species,
        )
        if config.interaction == "product_basis":
            return ProductBasisInteraction(
                config.channels,
                config.lmax,
                config.message_lmax,
                many_body=config.many_body,
                correlation=config.correlation,
                # the first layer's inputs are the scalar embeddings: build it on C x 0e (its l > 0 paths would
                # multiply zeros), unless asked for the zero-padded form of model files before format 2
                input_lmax=0 if index == 0 and config.scalar_first_layer else None,
                **common,
            )
        return InteractionBlock(config.channels, config.lmax, **common)

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.weight.dtype

    def _check_graph(self, graph) -> None:
        missing = [name for name in _REQUIRED_FIELDS if getattr(graph, name, None) is None]
        if missing:
            raise ValueError(
                f"graph lacks field(s) {missing}; build it with equimol.graph.atoms_to_graph "
                f"(radial_cutoff={self.radial_cutoff}, dtype={self.dtype})"
            )
        for name in ("pos", "cell", "cell_offsets"):
            tensor = getattr(graph, name)
            if tensor.dtype != self.dtype:
                raise ValueError(
                    f"graph.{name} is {tensor.dtype} but the model is {self.dtype}; build the graph with "
                    f"dtype={self.dtype} or convert the model with .to({self.dtype})"
                )

    def forward(
        self, graph, compute_forces: bool = True, compute_stress: bool = False, compute_virials: bool = False
    ) -> dict[str, torch.Tensor]:
        """Energy, per-atom energies, forces and (optionally) stress and per-atom virials of a graph or batch.

        Args:
            graph: torch-geometric ``Data``/``Batch`` (see the module docstring).
            compute_forces: add ``forces`` ``[n, 3]`` eV/Å (``-dE/dpos``; ``create_graph`` in training mode
                so a force loss can be back-propagated).
            compute_stress: add ``stress`` ``[B, 3, 3]`` eV/Å^3 (ASE sign; zero for non-periodic structures).
            compute_virials: add ``atom_virial`` ``[n, 3, 3]`` eV (see the module docstring).

        Returns:
            ``energy`` ``[B]`` eV, ``node_energy`` ``[n]`` eV, and ``forces`` / ``stress`` / ``atom_virial``
            when asked.
        """
        self._check_graph(graph)
        if compute_virials and self.physical_terms is not None and self.physical_terms.dispersion is not None:
            raise ValueError(
                "per-atom virials are not available for a model with model.dispersion: D3 depends on positions, "
                "not on the edge vectors that the virials are split over"
            )
        node_graph = getattr(graph, "batch", None)
        if node_graph is None:
            node_graph = torch.zeros(graph.pos.shape[0], dtype=torch.long, device=graph.pos.device)
        num_graphs = graph.cell.view(-1, 3, 3).shape[0]
        need_gradient = compute_forces or compute_stress or compute_virials
        with torch.set_grad_enabled(torch.is_grad_enabled() or need_gradient):
            positions = graph.pos
            if need_gradient and not positions.requires_grad:
                positions = positions.detach().requires_grad_(True)
            cell = graph.cell.view(-1, 3, 3)
            moved_positions, moved_cell = positions, cell
            strain = None
            if compute_stress:
                strain = torch.zeros(num_graphs, 3, 3, dtype=self.dtype, device=positions.device, requires_grad=True)
                symmetric = 0.5 * (strain + strain.transpose(1, 2))
                moved_positions = positions + torch.einsum("ni,nij->nj", positions, symmetric[node_graph])
                moved_cell = cell + torch.bmm(cell, symmetric)
            vectors = edge_vectors(moved_positions, graph.edge_index, graph.cell_offsets, moved_cell, node_graph)
            node_energy = self.node_energies(graph.atomic_numbers, graph.edge_index, vectors, node_graph, num_graphs)
            if self.physical_terms is not None and self.physical_terms.dispersion is not None:
                node_energy = node_energy + self.physical_terms.dispersion_energies(
                    graph, moved_positions, moved_cell, node_graph
                )
            energy = node_energy.new_zeros(num_graphs).index_add(0, node_graph, node_energy)
            out = {"energy": energy, "node_energy": node_energy}
            if need_gradient:
                inputs = [positions] + ([strain] if compute_stress else []) + ([vectors] if compute_virials else [])
                gradients = torch.autograd.grad(
                    energy.sum(), inputs, create_graph=self.training, allow_unused=True, materialize_grads=True
                )
                if compute_forces:
                    out["forces"] = -gradients[0]
                if compute_stress:
                    out["stress"] = self._stress(gradients[1], cell, graph.pbc.view(-1, 3))
                if compute_virials:
                    out["atom_virial"] = atom_virials(vectors, gradients[-1], graph.edge_index, positions.shape[0])
        return out

    @staticmethod
    def _stress(strain_gradient: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor) -> torch.Tensor:
        volume = torch.linalg.det(cell).abs()
        periodic = pbc.any(dim=1)
        # zero volume up to rounding: |det| against the product of the row lengths (0 when a row is 0)
        degenerate = periodic & (volume <= 1e-12 * cell.norm(dim=-1).prod(dim=-1))
        if not tracing() and bool(degenerate.any()):  # a traced graph cannot branch on values
            first = int(degenerate.nonzero()[0, 0])
            raise StructureError(
                f"stress of structure {first} of the batch: its periodic cell (pbc={pbc[first].tolist()}, "
                f"cell={cell[first].detach().cpu().tolist()}) has zero volume, so stress = dE/d(strain)/V does not "
                "exist; give the cell its lattice vectors, or do not ask for stress"
            )
        valid = periodic
        safe_volume = torch.where(valid, volume, torch.ones_like(volume))
        stress = strain_gradient / safe_volume.view(-1, 1, 1)
        return torch.where(valid.view(-1, 1, 1), stress, torch.zeros_like(stress))

    def node_energies(
        self,
        atomic_numbers: torch.Tensor,
        edge_index: torch.Tensor,
        vectors: torch.Tensor,
        node_graph: torch.Tensor,
        num_graphs: int,
    ) -> torch.Tensor:
        """``[n]`` per-atom energies (eV) from ``[n]`` atomic numbers, ``[2, E]`` ``edge_index`` (sender,
        receiver), ``[E, 3]`` edge vectors (Å) and ``[n]`` structure index of each atom: every position
        dependence of the model except D3 dispersion (added by :meth:`forward`) goes through ``vectors``."""
        element_index = self.species_index(atomic_numbers)
        sender, receiver = edge_index
        edges = self.edge_terms(vectors)
        spe = None
        if self.spe is not None:
            spe = self.spe(element_index, edges.envelope, sender, receiver, node_graph, num_graphs)
        features = self.initial_features(element_index, spe)
        layer_scalars = []
        for index in range(len(self.interactions)):
            features = self.layer(index, features, edges, edge_index, element_index)
            layer_scalars.append(features[:, : self.config.channels])
        node_energy = self.readout(layer_scalars[-len(self.readout.linear_heads) - 1 :], element_index)
        if self.physical_terms is not None:
            node_energy = node_energy + self.physical_terms.pair_energies(
                edges.lengths, element_index, sender, receiver
            )
        return node_energy

    def edge_terms(self, vectors: torch.Tensor) -> EdgeTerms:
        """What every layer reads from the ``[E, 3]`` edge vectors (Å): lengths, smooth cutoff, radial basis and
        spherical harmonics (shapes in :class:`EdgeTerms`)."""
        lengths = vectors.norm(dim=-1)
        edge_sh = o3.spherical_harmonics(self.sh_irreps, vectors, normalize=True, normalization="component")
        return EdgeTerms(lengths, self.envelope(lengths), self.radial_basis(lengths), edge_sh)

    def initial_features(self, element_index: torch.Tensor, spe: torch.Tensor | None = None) -> torch.Tensor:
        """``h^(0)`` ``[n, D_0]``: the species embedding (plus the ``[n, C]`` SPE), zero-padded to the first
        layer's input irreps (gated layers take l > 0 inputs; see :meth:`_interaction`)."""
        scalars = self.embedding(element_index)
        if spe is not None:
            scalars = scalars + spe
        input_dim = getattr(self.interactions[0], "input_irreps", self.irreps).dim
        return torch.cat([scalars, scalars.new_zeros(scalars.shape[0], input_dim - scalars.shape[1])], dim=-1)

    def layer(
        self,
        index: int,
        features: torch.Tensor,
        edges: EdgeTerms,
        edge_index: torch.Tensor,
        element_index: torch.Tensor,
        num_receivers: int | None = None,
    ) -> torch.Tensor:
        """``h^(t+1)`` of layer ``index`` (its interaction, then its many-body block if any) from ``[n, D_t]``
        ``features`` of all nodes; ``[k, D_{t+1}]`` for the first ``k = num_receivers`` nodes (all by default),
        which must hold every receiver of ``edge_index``."""
        sender, receiver = edge_index
        interaction = self.interactions[index]
        features = interaction(
            features, edges.edge_sh, edges.basis, edges.envelope, sender, receiver, element_index, num_receivers
        )
        if self.many_body is not None:
            features = self.many_body[index](features, element_index[: features.shape[0]])
        return features


def atom_virials(
    vectors: torch.Tensor, gradient: torch.Tensor, edge_index: torch.Tensor, num_atoms: int
) -> torch.Tensor:
    """``[n, 3, 3]`` per-atom virials (eV): ``-r_e (x) dE/dr_e`` of each ``[E, 3]`` edge, half to each end."""
    half = -0.5 * vectors.unsqueeze(-1) * gradient.unsqueeze(-2)
    virial = half.new_zeros(num_atoms, 3, 3)
    return virial.index_add(0, edge_index[0], half).index_add(0, edge_index[1], half)
