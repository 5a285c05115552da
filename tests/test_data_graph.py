"""Neighbor lists (vesin) against ``ase.neighborlist.neighbor_list``, and labelled graphs.

Edges are compared as exact sets of ``(sender, receiver, shift)``; edge lengths to 1e-12 Å
(float64 rounding of |r| <= 10 Å, a few ulps). Cutoffs are chosen so no pair sits within 1e-6 Å
of the cutoff (checked), where two correct codes could disagree.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list
from equimol.datasets.atoms_dataset import LabelSettings, record_to_graph
from equimol.datasets.readers import LabelKeys, atoms_to_record
from equimol.datasets.references import ElementReferences

from equimol.graph import atoms_to_graph, edge_vectors

LENGTH_TOL = 1e-12


def assert_same_neighbors(atoms: Atoms, radial_cutoff: float) -> int:
    sender_ase, receiver_ase, shift_ase, distance_ase = ase_neighbor_list("ijSd", atoms, radial_cutoff)
    assert np.all(np.abs(distance_ase - radial_cutoff) > 1e-6)
    graph = atoms_to_graph(atoms, radial_cutoff, torch.float64)
    sender, receiver = graph.edge_index.numpy()
    shifts = graph.cell_offsets.numpy().astype(np.int64)
    ours = {(int(i), int(j), *map(int, s)) for i, j, s in zip(sender, receiver, shifts)}
    reference = {(int(i), int(j), *map(int, s)) for i, j, s in zip(sender_ase, receiver_ase, shift_ase)}
    assert len(ours) == len(sender), "duplicate edges"
    assert ours == reference
    # ASE's D = pos[j] - pos[i] + S @ cell: the same convention (i sends, j receives).
    lengths = edge_vectors(graph.pos, graph.edge_index, graph.cell_offsets, graph.cell).norm(dim=1).numpy()
    order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], receiver, sender))
    order_ase = np.lexsort((shift_ase[:, 2], shift_ase[:, 1], shift_ase[:, 0], receiver_ase, sender_ase))
    np.testing.assert_allclose(lengths[order], distance_ase[order_ase], rtol=0, atol=LENGTH_TOL)
    return len(sender)


@pytest.mark.parametrize("name", ["random1000100", "random1000163", "random1000142"])
def test_neighbors_match_ase_on_oc20_slabs(shared_data: Path, name: str) -> None:
    path = shared_data / "oc20" / "dft_relaxation_trajs_2020" / f"{name}.traj"
    for index in (0, -1):
        atoms = ase.io.read(path, index)
        assert assert_same_neighbors(atoms, 6.0) > 0


def test_neighbors_match_ase_when_cutoff_exceeds_cell() -> None:
    # Triclinic two-atom cell, ~2.5 Å edges, cutoff 5.3 Å: every atom sees several images of itself.
    cell = np.array([[2.5, 0.0, 0.0], [0.7, 2.4, 0.0], [0.3, 0.5, 2.6]])
    atoms = Atoms("CuAu", scaled_positions=[[0, 0, 0], [0.45, 0.52, 0.47]], cell=cell, pbc=True)
    edges = assert_same_neighbors(atoms, 5.3)
    graph = atoms_to_graph(atoms, 5.3)
    self_images = (graph.edge_index[0] == graph.edge_index[1]).sum()
    assert self_images > 10 and edges > 100
    # Mixed periodicity: a slab periodic in x and y only.
    slab = atoms.copy()
    slab.pbc = [True, True, False]
    assert_same_neighbors(slab, 5.3)


def test_neighbors_match_ase_for_a_molecule(shared_data: Path) -> None:
    atoms = ase.io.read(shared_data / "3bpa" / "train_300K.xyz", 0)
    assert_same_neighbors(atoms, 5.0)


def test_labelled_graph_fields(shared_data: Path) -> None:
    atoms = ase.io.read(shared_data / "oc20" / "oc20_single_adslab_atoms.json")
    record = atoms_to_record(atoms, LabelKeys(), "adslab.json", 0)
    coeff = np.zeros(100)
    coeff[[6, 8, 13, 29, 34]] = [-1.0, -2.0, -3.0, -4.0, -5.0]
    settings = LabelSettings(6.0, torch.float32, element_references=ElementReferences(coeff), forces_on="free")
    graph = record_to_graph(record, settings)
    n = 34
    assert graph.pos.dtype == torch.float32 and graph.forces.dtype == torch.float32
    assert graph.energy.shape == (1,) and graph.energy.dtype == torch.float32
    expected = -135.66393572 - (-1.0 - 2.0 - 3.0 * 8 - 4.0 * 8 - 5.0 * 16)
    assert graph.energy.item() == pytest.approx(expected, rel=1e-7)  # float32 storage: 6e-8 relative
    assert graph.forces.shape == (n, 3) and graph.fixed.shape == (n,) and graph.tags.shape == (n,)
    assert graph.fixed.dtype == torch.bool and graph.tags.dtype == torch.int64
    assert torch.equal(graph.force_mask, ~graph.fixed) and int(graph.fixed.sum()) == 24
    assert graph.natoms.tolist() == [n]
    everything = record_to_graph(record, LabelSettings(6.0, torch.float64))
    assert bool(everything.force_mask.all())
    np.testing.assert_array_equal(everything.forces.numpy(), atoms.get_forces(apply_constraint=False))


def test_edge_vectors_of_a_batch_use_each_structures_cell() -> None:
    from torch_geometric.data import Batch

    small = Atoms("Cu", positions=[[0.1, 0.2, 0.3]], cell=np.diag([2.0, 2.1, 2.2]), pbc=True)
    large = Atoms(
        "Cu2", positions=[[0, 0, 0], [1.0, 1.1, 0.9]], cell=[[3.0, 0, 0], [0.4, 3.1, 0], [0, 0.2, 3.3]], pbc=True
    )
    graphs = [atoms_to_graph(atoms, 3.5) for atoms in (small, large)]
    batch = Batch.from_data_list(graphs)
    batched = edge_vectors(batch.pos, batch.edge_index, batch.cell_offsets, batch.cell, batch.batch)
    separate = torch.cat([edge_vectors(g.pos, g.edge_index, g.cell_offsets, g.cell) for g in graphs])
    torch.testing.assert_close(batched, separate, rtol=0, atol=1e-14)
    assert batched.norm(dim=1).max() < 3.5


def test_subtracted_references_come_back_with_add_references() -> None:
    """The reference round trip of the trainer and the evaluation: subtract per element, add back per structure."""
    import ase.build
    from ase.calculators.singlepoint import SinglePointCalculator
    from equimol.datasets.references import add_references, reference_table
    from torch_geometric.data import Batch

    frames = [ase.build.molecule(name) for name in ("CH4", "H2O", "NH3")]
    for energy, atoms in zip((-1084.1, -2069.3, -1526.2), frames):
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.zeros((len(atoms), 3)))
    references = {1: -13.6, 6: -1029.5, 7: -1484.3, 8: -2041.8}
    coeff = np.zeros(9)
    coeff[list(references)] = list(references.values())
    settings = LabelSettings(5.0, torch.float64, element_references=ElementReferences(coeff))
    graphs = [record_to_graph(atoms_to_record(a, LabelKeys(), "mol", i), settings) for i, a in enumerate(frames)]
    batch = Batch.from_data_list(graphs)
    total = add_references(batch.energy, batch.atomic_numbers, batch.batch, reference_table(references))
    expected = torch.tensor([-1084.1, -2069.3, -1526.2], dtype=torch.float64)
    assert (total - expected).abs().max().item() <= 1e-9  # float64 sums of ~1e3 eV: a few ulps
    assert (batch.energy - expected).abs().min().item() > 1e3  # the labels had the references taken off
