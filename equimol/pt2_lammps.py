r"""The ``lammps`` compile target: the graph that LAMMPS's ``pair_style equimol`` runs (``lammps_plugin/``).

``equimol export MODEL OUT.pt2 --format aotinductor --target lammps`` writes an AOTInductor package whose one
call maps the graph that a LAMMPS rank builds from its atoms to what the pair style needs:

==================  ===========  ==============================================================
input               shape        meaning
==================  ===========  ==============================================================
``vectors``         ``[E, 3]``   edge vectors ``r_e = x_receiver - x_sender`` (Å, model dtype),
                                 taken from LAMMPS's coordinates of owned and ghost atoms
``atomic_numbers``  ``[n]``      int64, one per graph node
``edge_index``      ``[2, E]``   int64 ``[sender, receiver]`` node indices
``local_mask``      ``[n]``      model dtype: 1 for the rank's owned atoms, 0 for ghosts
==================  ===========  ==============================================================

followed by ``num_layers - 1`` int8 tensors ``prefix_t`` ``[k_t]`` whose lengths are all that counts:
the edges come sorted by how many edges their receiver is from an owned atom, and layer ``t + 1``
(``t = 1 .. num_layers - 1``) is fed only the first ``k_t`` edges, those into nodes fewer than
``num_layers - t`` edges away; its other nodes cannot reach an owned atom's energy any more. The
package outputs ``node_energy`` ``[n]`` (eV) and ``edge_gradient`` ``[E, 3]`` = ``dE_local / dr_e`` (eV/Å)
with ``E_local = sum_i local_mask_i node_energy_i``. The plugin forms everything from those in C++:
forces ``F_receiver -= g_e``, ``F_sender += g_e`` (on the LAMMPS atoms, ghosts included; reverse
communication adds ghost forces to their owners), the virial ``W = -sum_e r_e (x) g_e`` and per-atom
virials ``W_i`` (each edge's term half to each end: :mod:`equimol.models.potential`'s convention).

Edge vectors come in directly instead of positions because ghost atoms are periodic images: the
plugin merges the images of one atom into one node (they carry the same features), and an edge keeps
the vector between the two LAMMPS coordinates it joins, so no cell or shift is needed and the graph
of one rank is at most the whole structure (on one rank, exactly the periodic graph).

**Receptive field.** A node's energy after ``num_layers`` message-passing layers depends on atoms up
to ``num_layers`` edges away. The package's metadata (``aot_inductor.metadata``, read by the plugin
with ``AOTIModelPackageLoader::get_metadata``) states ``receptive_hops = num_layers``; the plugin
asks LAMMPS for ghost atoms ``receptive_hops x cutoff + skin`` deep and feeds the model every edge
whose receiver is within ``receptive_hops - 1`` edges of an owned atom. SPE models are refused: the
Laplacian filter of degree ``K`` (plus the degree signal and ``rho``'s aggregation) widens the
field to ``num_layers + K + 2`` edges, a ghost shell too deep to be worth it; run them through
``fix external`` (:mod:`equimol.lammps`).

Metadata keys (strings): ``equimol_target`` (``lammps``), ``equimol_lammps_format`` (``1``: these
inputs and outputs), ``equimol_species``, ``equimol_symbols``
and ``equimol_masses`` (comma-separated atomic numbers, chemical symbols and standard masses in amu,
for ``pair_coeff`` and the mass check), ``equimol_cutoff`` (Å), ``equimol_receptive_hops``,
``equimol_dtype`` (``float32``/``float64``), ``equimol_device`` (``cpu``/``cuda``),
``equimol_threads`` and ``equimol_version``.

**Threads.** AOTInductor writes the thread count of the compiling process into the package's
kernels (``torch.get_num_threads()``; one thread gives serial kernels, the choice for one MPI rank
per core: ``equimol export ... --threads 1``); the plugin gives torch's own thread pool, which runs
the operators the package leaves to ATen, the same count (``equimol_threads``).
"""

from __future__ import annotations

import torch
from torch import nn

from equimol.errors import CompiledModelError
from equimol.graph import edge_vectors
from equimol.utils.tracing import example_batch, export_forces

LAMMPS_FORMAT = "1"  # the inputs and outputs above; the plugin refuses packages of another format


class _EdgePrefix(nn.Module):
    """A message-passing layer fed only the first ``count`` edges (every layer aggregates at receivers)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.count = None

    def forward(self, features, edge_sh, basis, envelope, sender, receiver, element_index):
        k = self.count
        return self.layer(features, edge_sh[:k], basis[:k], envelope[:k], sender[:k], receiver[:k], element_index)


class _LammpsTraceable(nn.Module):
    """``(vectors, atomic_numbers, edge_index, local_mask, *prefixes)`` in, ``(node_energy, edge_gradient)`` out.

    Wraps layers 2 .. num_layers of ``model`` (the copy that is traced) in :class:`_EdgePrefix`.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.prefixed = [_EdgePrefix(layer) for layer in model.interactions[1:]]
        for index, wrapper in enumerate(self.prefixed, start=1):
            model.interactions[index] = wrapper

    def forward(self, vectors, atomic_numbers, edge_index, local_mask, *prefixes):
        for wrapper, prefix in zip(self.prefixed, prefixes, strict=True):
            wrapper.count = prefix.shape[0]
        with torch.enable_grad():
            vectors = vectors.detach().requires_grad_(True)
            node_graph = torch.zeros_like(atomic_numbers)
            node_energy = self.model.node_energies(atomic_numbers, edge_index, vectors, node_graph, 1)
            local_energy = (node_energy * local_mask).sum()
            (gradient,) = torch.autograd.grad(local_energy, [vectors], allow_unused=True, materialize_grads=True)
        return node_energy.detach(), gradient


def lammps_inputs(model: nn.Module) -> tuple[torch.Tensor, ...]:
    """Example inputs: the 8 atoms of :func:`equimol.utils.tracing.example_batch`, the last 3 as ghosts."""
    pos, atomic_numbers, cell, _, edge_index, cell_offsets, batch = example_batch(model)
    vectors = edge_vectors(pos, edge_index, cell_offsets, cell, batch)
    local_mask = torch.ones(pos.shape[0], dtype=pos.dtype, device=pos.device)
    local_mask[-3:] = 0.0
    edges = edge_index.shape[1]
    prefixes = [
        torch.zeros(edges - 5 * t, dtype=torch.int8, device=pos.device) for t in range(1, len(model.interactions))
    ]
    return vectors, atomic_numbers, edge_index, local_mask, *prefixes


def check_lammps_model(model: nn.Module) -> None:
    """Refuse a model the plugin cannot serve exactly (see the module docstring)."""
    if model.spe is not None:
        raise CompiledModelError(
            f"model.spe is enabled: its Laplacian filter (degree {model.config.spe.polynomial_degree}) widens the "
            "receptive field beyond num_layers cutoffs, which pair_style equimol does not cover; run SPE models "
            "through `equimol lammps` (fix external)"
        )


def export_lammps_program(model: nn.Module) -> torch.export.ExportedProgram:
    """The ``torch.export`` program of the ``lammps`` target (dynamic numbers of nodes and edges)."""
    check_lammps_model(model)
    atoms, edges = torch.export.Dim("atoms", min=1), torch.export.Dim("edges", min=0)
    prefixes = tuple({0: torch.export.Dim(f"layer{t + 1}_edges", min=0)} for t in range(1, len(model.interactions)))
    shapes = ({0: edges}, {0: atoms}, {1: edges}, {0: atoms}, *prefixes)
    return export_forces(_LammpsTraceable, model, lammps_inputs(model), shapes)


def plugin_metadata(model: nn.Module) -> dict[str, str]:
    """The package metadata the plugin checks (see the module docstring)."""
    from ase.data import atomic_masses, chemical_symbols

    from equimol import __version__

    return {
        "equimol_target": "lammps",
        "equimol_lammps_format": LAMMPS_FORMAT,
        "equimol_species": ",".join(str(int(z)) for z in model.species),
        "equimol_symbols": ",".join(chemical_symbols[int(z)] for z in model.species),
        "equimol_masses": ",".join(repr(float(atomic_masses[int(z)])) for z in model.species),
        "equimol_cutoff": repr(float(model.radial_cutoff)),
        "equimol_receptive_hops": str(int(model.config.num_layers)),
        "equimol_dtype": str(model.dtype).removeprefix("torch."),
        "equimol_device": next(model.parameters()).device.type,
        "equimol_threads": str(torch.get_num_threads()),
        "equimol_version": __version__,
    }
