r"""The ``lammps`` compile target: the programs that LAMMPS's ``pair_style equimol`` runs (``lammps_plugin/``).

``equimol export MODEL OUT.pt2 --format aotinductor --target lammps`` writes one AOTInductor package that
holds the model's message-passing layers as separate programs, so that a rank of a domain-decomposed LAMMPS
run evaluates **its owned atoms only** and exchanges node features with its neighbours between layers.

**The rank's graph.** Nodes are the owned atoms (first, ``k`` of them) and the ghost atoms within one cutoff
of them (the periodic images of one atom are one node); edges run from any node into an owned atom only:

==================  ===========  ==============================================================
input               shape        meaning
==================  ===========  ==============================================================
``features``        ``[n, D_t]`` ``h^(t)`` of every node (layers ``t >= 1`` only)
``atomic_numbers``  ``[n]``      int64
``vectors``         ``[E, 3]``   edge vectors ``r_e = x_receiver - x_sender`` (Å, model dtype)
``edge_index``      ``[2, E]``   int64 ``[sender, receiver]``, every receiver ``< k``
``owned``           ``[k]``      int8; only its length counts
==================  ===========  ==============================================================

**Layer by layer.** Layer ``t`` (``t = 0 .. T-1``) maps ``h^(t)`` of all nodes to ``h^(t+1)`` of the owned
ones and their share ``e_t`` of the per-atom energies (its read-out; the last layer adds the shift, E0 and
the pair terms), so ``E_local = sum_t sum_{i < k} e_{t,i}``. With ``g_t = dE/dh^(t)``:

.. math::

    \text{forward}_t:\ h^{(t)} \mapsto (h^{(t+1)}_{<k},\ e_t,\ s_t) \qquad
    \text{backward}_t:\ (s_t,\ g_{t+1}) \mapsto (\partial E / \partial r\,|_t,\ g_t)

where ``s_t`` are the intermediate tensors the backward pass needs (saved, not recomputed: the package's
forward and backward programs are the two halves of one traced joint graph, :func:`split_at_cotangent`).
The last layer is one program ``model``: ``h^(T-1) -> (e_{T-1}, dE/dr, g_{T-1})``. Between two layers the
plugin copies ``h^(t+1)`` of its owned atoms to their ghost images on other ranks (LAMMPS forward
communication); going back, ``g`` of ghost nodes is summed into their owners (reverse communication).
Ghosts are needed only one cutoff deep, whatever the number of layers, and no rank computes a layer for an
atom it does not own. Forces follow from ``dE/dr_e`` (``F_receiver -= g_e``, ``F_sender += g_e``), the
virial ``W = -sum_e r_e (x) g_e`` and per-atom virials ``W_i`` (each edge's term half to each end:
:mod:`equimol.models.potential`'s convention).

Package programs: ``layer{t}_forward`` and ``layer{t}_backward`` for ``t < T - 1``, and ``model`` (the last
layer). ``layer0_forward`` takes no ``features`` (``h^(0)`` is the species embedding) and ``layer0_backward``
returns no ``g_0``. A ``backward`` program takes the inputs of its ``forward``, then its saved tensors, then
``g_{t+1}`` ``[k, D_{t+1}]``; it returns ``dE/dr`` ``[E, 3]`` (and ``g_t`` ``[n, D_t]``). Outputs of
``forward``: ``h^(t+1)`` ``[k, D_{t+1}]``, ``e_t`` ``[k]``, the saved tensors. Outputs of ``model``: ``e``
``[k]``, ``dE/dr`` ``[E, 3]`` (and ``g_{T-1}`` ``[n, D_{T-1}]`` if ``T > 1``).

SPE models are refused: the Laplacian filter is a message passing of its own (degree ``K``) that these
programs do not split; run them through ``fix external`` (:mod:`equimol.lammps`).

Metadata of ``model`` (strings): ``equimol_target`` (``lammps``), ``equimol_lammps_format`` (``2``),
``equimol_species``, ``equimol_symbols`` and ``equimol_masses`` (comma-separated atomic numbers, chemical
symbols and standard masses in amu, for ``pair_coeff`` and the mass check), ``equimol_cutoff`` (Å),
``equimol_layers`` (``T``), ``equimol_feature_widths`` (``D_1 .. D_{T-1}``), ``equimol_saved`` (how many
saved tensors each ``forward`` returns), ``equimol_dtype``, ``equimol_device``, ``equimol_threads`` and
``equimol_version``.

**Threads.** AOTInductor writes the thread count of the compiling process into the package's kernels
(``torch.get_num_threads()``; one thread for one MPI rank per core: ``equimol export ... --threads 1``); the
plugin gives torch's own thread pool, which runs the operators left to ATen, the same count.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from equimol.errors import CompiledModelError
from equimol.graph import edge_vectors
from equimol.utils.tracing import example_batch, export_graph, frozen_copy, split_at_cotangent, trace_forces

LAMMPS_FORMAT = "2"  # the programs above; the plugin refuses packages of another format


class LayerStage(nn.Module):
    """Layer ``index`` of ``model`` on a rank's graph: ``([features,] atomic_numbers, vectors, edge_index,
    owned) -> (h^(t+1) [k, D], e_t [k])`` (module docstring)."""

    def __init__(self, model: nn.Module, index: int) -> None:
        super().__init__()
        self.model = model
        self.index = index
        self.last = index == len(model.interactions) - 1

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        features, (atomic_numbers, vectors, edge_index, owned) = (
            (None, inputs)
            if self.index == 0
            else (
                inputs[0],
                inputs[1:],
            )
        )
        k = owned.shape[0]
        element_index = model.species_index(atomic_numbers)
        edges = model.edge_terms(vectors)
        if features is None:
            features = model.initial_features(element_index)
        updated = model.layer(self.index, features, edges, edge_index, element_index, num_receivers=k)
        scalars = updated[:, : model.config.channels]
        energy = model.readout.layer_energy(self.index, len(model.interactions), scalars, element_index[:k])
        if self.last and model.physical_terms is not None:
            sender, receiver = edge_index
            energy = energy + model.physical_terms.pair_energies(edges.lengths, element_index, sender, receiver)[:k]
        return updated, energy


class _JointStage(nn.Module):
    """A :class:`LayerStage` with its vector-Jacobian product, one function to trace.

    Not the last layer: ``(*inputs, g_{t+1}) -> (h^(t+1), e_t, dE/dr, [g_t])``, the cotangent of ``e_t`` being
    ones. The last layer: ``inputs -> (e, dE/dr, [g_{T-1}])``.
    """

    def __init__(self, stage: LayerStage) -> None:
        super().__init__()
        self.stage = stage

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        stage = self.stage
        if not stage.last:
            inputs, cotangent = inputs[:-1], inputs[-1]
        with torch.enable_grad():
            inputs = list(inputs)
            position = 0 if stage.index == 0 else 1  # where the edge vectors are
            inputs[position + 1] = inputs[position + 1].detach().requires_grad_(True)
            wrt = [inputs[position + 1]]
            if stage.index > 0:
                inputs[0] = inputs[0].detach().requires_grad_(True)
                wrt.append(inputs[0])
            updated, energy = stage(*inputs)
            if stage.last:
                gradients = torch.autograd.grad(energy.sum(), wrt, allow_unused=True, materialize_grads=True)
                return (energy.detach(), *gradients)
            outputs, cotangents = [updated], [cotangent]
            if energy.requires_grad:  # a layer that is not read out has zero energies
                outputs, cotangents = [updated, energy], [cotangent, torch.ones_like(energy)]
            gradients = torch.autograd.grad(
                outputs, wrt, grad_outputs=cotangents, allow_unused=True, materialize_grads=True
            )
        return (updated.detach(), energy.detach(), *gradients)


def check_lammps_model(model: nn.Module) -> None:
    """Refuse a model the plugin cannot serve exactly (see the module docstring)."""
    if model.spe is not None:
        raise CompiledModelError(
            f"model.spe is enabled: its Laplacian filter (degree {model.config.spe.polynomial_degree}) is a message "
            "passing of its own that pair_style equimol does not split across ranks; run SPE models through "
            "`equimol lammps` (fix external)"
        )


def stage_inputs(model: nn.Module, index: int, width: int | None = None) -> tuple[torch.Tensor, ...]:
    """Example inputs of layer ``index``: the 8 atoms of :func:`equimol.utils.tracing.example_batch`, the first
    5 owned, edges into them only, and for ``index > 0`` random ``[8, width]`` features."""
    pos, atomic_numbers, cell, _, edge_index, cell_offsets, batch = example_batch(model)
    vectors = edge_vectors(pos, edge_index, cell_offsets, cell, batch)
    owned = 5
    into_owned = edge_index[1] < owned
    inputs = (atomic_numbers, vectors[into_owned], edge_index[:, into_owned], pos.new_zeros(owned, dtype=torch.int8))
    if index == 0:
        return inputs
    generator = torch.Generator().manual_seed(index)
    features = torch.randn(pos.shape[0], width, generator=generator, dtype=torch.float64)
    return (features.to(pos.dtype).to(pos.device), *inputs)


def feature_widths(model: nn.Module) -> list[int]:
    """``D_1 .. D_{T-1}``: the widths of the node features exchanged between layers."""
    base = stage_inputs(model, 0)
    widths, inputs = [], base
    for index in range(len(model.interactions) - 1):
        with torch.no_grad():
            updated, _ = LayerStage(model, index)(*inputs)
        widths.append(updated.shape[1])
        inputs = (updated.new_zeros(base[0].shape[0], updated.shape[1]), *base)
    return widths


def _dynamic_shapes(index: int, last: bool) -> tuple[dict, ...]:
    nodes, edges, owned = (
        torch.export.Dim("nodes", min=1),
        torch.export.Dim("edges", min=0),
        torch.export.Dim("owned", min=1),
    )
    shapes = ({0: nodes}, {0: edges}, {1: edges}, {0: owned})
    if index > 0:
        shapes = ({0: nodes}, *shapes)
    return shapes if last else (*shapes, {0: owned})


def export_lammps_programs(model: nn.Module) -> dict[str, tuple[torch.export.ExportedProgram, int]]:
    """The ``torch.export`` programs of the ``lammps`` target, by package name, each with its count of saved
    tensors (dynamic numbers of nodes, owned nodes and edges; module docstring)."""
    check_lammps_model(model)
    traced_model = frozen_copy(model)
    layers = len(traced_model.interactions)
    widths = [None, *feature_widths(traced_model)]
    programs = {}
    for index in range(layers):
        stage = LayerStage(traced_model, index)
        example = stage_inputs(traced_model, index, widths[index])
        last = index == layers - 1
        if last:
            joint = trace_forces(_JointStage(stage), *example)
            programs["model"] = (export_graph(joint, example, _dynamic_shapes(index, True)), 0)
            continue
        reference = example[-3]  # the edge vectors: dtype and device
        cotangent = torch.randn(example[-1].shape[0], widths[index + 1], dtype=torch.float64).to(reference)
        joint = trace_forces(_JointStage(stage), *example, cotangent)
        split = split_at_cotangent(joint, forward_outputs=2, example=(*example, cotangent))
        shapes = _dynamic_shapes(index, False)
        forward = export_graph(split.forward, example, shapes[:-1])
        backward = export_graph(split.backward, split.backward_example, split.backward_shapes(shapes))
        programs[f"layer{index}_forward"] = (forward, len(split.saved))
        programs[f"layer{index}_backward"] = (backward, len(split.saved))
    return programs


def compile_lammps_package(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """AOTInductor-compile :func:`export_lammps_programs` into one package at ``path`` (``.pt2``); the
    plugin's ``metadata`` (plus ``equimol_saved``) goes with every program."""
    from torch._inductor import aot_compile
    from torch._inductor.package import package_aoti

    programs = export_lammps_programs(model)
    saved = ",".join(str(programs[f"layer{t}_forward"][1]) for t in range(len(model.interactions) - 1))
    metadata = {**metadata, "equimol_saved": saved}
    files = {}
    for name, (program, _) in programs.items():
        args, kwargs = program.example_inputs
        options = {"aot_inductor.package": True, "aot_inductor.metadata": metadata}
        files[name] = aot_compile(program.module(check_guards=False), args, kwargs, options=options)
    package_aoti(str(path), files)


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
        "equimol_layers": str(len(model.interactions)),
        "equimol_feature_widths": ",".join(str(width) for width in feature_widths(model)),
        "equimol_dtype": str(model.dtype).removeprefix("torch."),
        "equimol_device": next(model.parameters()).device.type,
        "equimol_threads": str(torch.get_num_threads()),
        "equimol_version": __version__,
    }
