"""Atoms to radius graphs: the one graph format every model, trainer and calculator uses.

**Edge convention.** ``edge_index = [sender, receiver]`` (``[2, E]``, int64); the edge vector is

.. math:: \\mathbf{r}_e = \\mathbf{x}_{\\mathrm{receiver}} - \\mathbf{x}_{\\mathrm{sender}}
          + \\mathbf{S}_e \\cdot \\mathbf{h}

with ``S_e = cell_offsets[e]`` (``[E, 3]``, integer-valued, stored in the position dtype) and the
cell ``h`` whose rows are the lattice vectors. The list is full (both directions), excludes an
atom's zero-shift self pair and keeps periodic self images. Positions in Å.

**Graph fields** (a torch-geometric ``Data``; batches add ``batch`` and ``ptr``):

==================  ===============  =========================================================
``pos``             ``[n, 3]``       positions, Å, in the requested dtype
``atomic_numbers``  ``[n]``          int64
``cell``            ``[1, 3, 3]``    rows are lattice vectors, Å (zeros when not periodic)
``pbc``             ``[1, 3]``       bool
``edge_index``      ``[2, E]``       int64, ``[sender, receiver]``
``cell_offsets``    ``[E, 3]``       integer lattice shifts, position dtype
==================  ===============  =========================================================

**Labels** (added by :func:`equimol.datasets.atoms_dataset.record_to_graph`; float labels in the
requested dtype; a batch concatenates them along the first axis):

==================  ===============  =========================================================
``energy``          ``[1]``          eV; total, minus the per-system reference in adsorption
                                     mode, minus the per-element references when configured
``forces``          ``[n, 3]``       eV/Å (when the data have forces)
``stress``          ``[1, 3, 3]``    eV/Å³, ASE sign: positive = tensile (when present)
``fixed``           ``[n]``          bool, atoms held fixed in the DFT run (``FixAtoms``)
``tags``            ``[n]``          int64 (OC20: 0 sub-surface, 1 surface, 2 adsorbate)
``force_mask``      ``[n]``          bool, atoms whose forces enter the loss (all, or free only)
``natoms``          ``[1]``          int64, number of atoms
``sid``             scalar           system id (a list in a batch when not an int)
``fid``             ``[1]``          int64, frame index in its trajectory or file
==================  ===============  =========================================================
"""

from __future__ import annotations

import numpy as np
import torch
import vesin
from ase import Atoms
from torch_geometric.data import Data


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, radial_cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbor list within ``radial_cutoff`` (Å) through vesin.

    Args:
        positions: ``[n, 3]`` Å.
        cell: ``[3, 3]`` rows are lattice vectors, Å (ignored along non-periodic directions).
        pbc: ``[3]`` bool.
        radial_cutoff: Å.

    Returns:
        ``sender`` ``[E]``, ``receiver`` ``[E]`` (int64) and ``cell_offsets`` ``[E, 3]`` (int64),
        with ``pos[receiver] - pos[sender] + cell_offsets @ cell`` the edge vectors.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    box = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    if not pbc.any():
        box = np.zeros((3, 3))
    calculator = vesin.NeighborList(cutoff=float(radial_cutoff), full_list=True)
    first, second, shifts = calculator.compute(points=positions, box=box, periodic=pbc.tolist(), quantities="ijS")
    # vesin's vector is pos[j] - pos[i] + S @ box: i sends, j receives.
    return first.astype(np.int64), second.astype(np.int64), shifts.astype(np.int64)


def structure_to_graph(
    positions: np.ndarray,
    atomic_numbers: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    radial_cutoff: float,
    dtype: torch.dtype = torch.float64,
) -> Data:
    """Build the radius graph (no labels) of ``[n, 3]`` positions (Å), ``[n]`` atomic numbers,
    a ``[3, 3]`` cell (rows are lattice vectors, Å) and ``[3]`` pbc, in the edge convention above.
    The cell is stored as zeros when no direction is periodic.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    sender, receiver, offsets = neighbor_list(positions, cell, pbc, radial_cutoff)
    return Data(
        pos=torch.as_tensor(positions, dtype=dtype),
        atomic_numbers=torch.as_tensor(np.asarray(atomic_numbers), dtype=torch.long).reshape(-1),
        cell=torch.as_tensor(cell if pbc.any() else np.zeros((3, 3)), dtype=dtype).unsqueeze(0),
        pbc=torch.as_tensor(pbc).unsqueeze(0),
        edge_index=torch.as_tensor(np.stack([sender, receiver]), dtype=torch.long),
        cell_offsets=torch.as_tensor(offsets, dtype=dtype),
        num_nodes=positions.shape[0],
    )


def atoms_to_graph(atoms: Atoms, radial_cutoff: float, dtype: torch.dtype = torch.float64) -> Data:
    """Build the radius graph of ``atoms`` (no labels) in the edge convention above.

    Args:
        atoms: an ASE ``Atoms``; its ``pbc`` and ``cell`` decide the periodic images.
        radial_cutoff: Å.
        dtype: floating dtype of ``pos``, ``cell`` and ``cell_offsets``.
    """
    return structure_to_graph(
        atoms.get_positions(), atoms.get_atomic_numbers(), atoms.get_cell()[:], atoms.get_pbc(), radial_cutoff, dtype
    )


def edge_vectors(graph: Data) -> torch.Tensor:
    """``[E, 3]`` edge vectors (Å) of a graph or batch, differentiable in ``pos`` and ``cell``."""
    sender, receiver = graph.edge_index
    vectors = graph.pos[receiver] - graph.pos[sender]
    if graph.cell_offsets.numel():
        batch = getattr(graph, "batch", None)
        edge_graph = batch[sender] if batch is not None else torch.zeros_like(sender)
        shifts = torch.einsum("ej,ejk->ek", graph.cell_offsets, graph.cell[edge_graph])
        vectors = vectors + shifts
    return vectors
