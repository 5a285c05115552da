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

Labelled graphs for training add the fields of :mod:`equimol.datasets.atoms_dataset`.
"""

from __future__ import annotations

import numpy as np
import torch
import vesin
from ase import Atoms
from torch_geometric.data import Data

from equimol.structure_checks import check_before_neighbor_list


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

    Raises:
        StructureError: a degenerate periodic cell, one so small for the cutoff that the list would be
            pathological, non-finite values, or a structure vesin's cell list would crash on
            (:func:`equimol.structure_checks.check_before_neighbor_list`); checked before building.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    box = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    if not pbc.any():
        box = np.zeros((3, 3))
    check_before_neighbor_list(positions, box, pbc, radial_cutoff)
    calculator = vesin.NeighborList(cutoff=float(radial_cutoff), full_list=True)
    first, second, shifts = calculator.compute(points=positions, box=box, periodic=pbc.tolist(), quantities="ijS")
    # vesin's vector is pos[j] - pos[i] + S @ box: i sends, j receives.
    return first.astype(np.int64), second.astype(np.int64), shifts.astype(np.int64)


def graph_from_edges(
    positions: np.ndarray,
    atomic_numbers: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    edges: tuple[np.ndarray, np.ndarray, np.ndarray],
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Data:
    """The graph (no labels) of ``[n, 3]`` positions (Å), ``[n]`` atomic numbers, a ``[3, 3]`` cell
    (rows are lattice vectors, Å), ``[3]`` pbc and ``edges = (sender [E], receiver [E], cell_offsets [E, 3])``
    from :func:`neighbor_list`, in the edge convention above. The cell is stored as zeros when no
    direction is periodic; float fields are in ``dtype``, everything on ``device``.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    sender, receiver, offsets = edges
    floats = lambda array: torch.as_tensor(array, dtype=dtype, device=device)  # noqa: E731
    return Data(
        pos=floats(positions),
        atomic_numbers=torch.as_tensor(np.asarray(atomic_numbers), dtype=torch.long, device=device).reshape(-1),
        cell=floats(cell if pbc.any() else np.zeros((3, 3))).unsqueeze(0),
        pbc=torch.as_tensor(pbc, device=device).unsqueeze(0),
        edge_index=torch.as_tensor(np.stack([sender, receiver]), dtype=torch.long, device=device),
        cell_offsets=floats(offsets),
        num_nodes=positions.shape[0],
    )


def structure_to_graph(
    positions: np.ndarray,
    atomic_numbers: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    radial_cutoff: float,
    dtype: torch.dtype = torch.float64,
) -> Data:
    """Build the radius graph (no labels) of ``[n, 3]`` positions (Å), ``[n]`` atomic numbers,
    a ``[3, 3]`` cell (rows are lattice vectors, Å) and ``[3]`` pbc, with edges within ``radial_cutoff`` (Å).
    """
    edges = neighbor_list(positions, cell, pbc, radial_cutoff)
    return graph_from_edges(positions, atomic_numbers, cell, pbc, edges, dtype)


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


def edge_vectors(
    pos: torch.Tensor,
    edge_index: torch.Tensor,
    cell_offsets: torch.Tensor,
    cell: torch.Tensor,
    batch: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[E, 3]`` edge vectors (Å), ``pos[receiver] - pos[sender] + cell_offsets @ cell[graph of the edge]``.

    Args:
        pos: ``[n, 3]`` positions, Å.
        edge_index: ``[2, E]`` int64, ``[sender, receiver]``.
        cell_offsets: ``[E, 3]`` integer lattice shifts in the position dtype.
        cell: ``[B, 3, 3]`` (or ``[3, 3]`` for one structure) rows are lattice vectors, Å.
        batch: ``[n]`` structure index of each atom (``None``: one structure).

    Differentiable in ``pos`` and ``cell``.
    """
    sender, receiver = edge_index
    vectors = pos[receiver] - pos[sender]
    if cell_offsets.numel():
        edge_graph = batch[sender] if batch is not None else torch.zeros_like(sender)
        shifts = torch.einsum("ej,ejk->ek", cell_offsets, cell.view(-1, 3, 3)[edge_graph])
        vectors = vectors + shifts
    return vectors
