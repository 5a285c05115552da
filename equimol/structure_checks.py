r"""Structures that have no answer: refused with a message, before any expensive or meaningless work.

* **Degenerate periodic cell.** The periodic directions of a cell span a lattice of measure
  :math:`M_d` (length, area or volume for :math:`d = 1, 2, 3` periodic directions,
  :math:`M_d = \sqrt{\det(H_p H_p^\top)}` with :math:`H_p` the periodic rows of the cell). A
  periodic structure with :math:`M_d = 0` has no neighbor list, and a stress needs a volume.
* **Pathological neighbor list.** Each atom sees, within the cutoff :math:`r_c`, about
  :math:`n V_d(r_c) / M_d` periodic images of the :math:`n` atoms of the cell
  (:math:`V_1 = 2 r_c`, :math:`V_2 = \pi r_c^2`, :math:`V_3 = \tfrac43 \pi r_c^3`), an upper
  bound for slabs and wires. Dense solids at :math:`r_c = 6` Å give about 100; one C atom in a
  0.05 Å cube at 5 Å gives 4 million, which vesin builds in tens of seconds. More than
  :data:`MAX_NEIGHBORS_PER_ATOM` is refused before the list is built.
* **Atoms on top of each other.** A pair closer than a threshold (training data: ``data.min_distance``)
  is almost always a broken frame; :func:`closest_pair` finds it from the edge list.

Every refusal is a :class:`StructureError` (a ``ValueError``) that names the cell, pbc and what to do;
callers add which file, frame or structure it was.
"""

from __future__ import annotations

import math

import numpy as np

MAX_NEIGHBORS_PER_ATOM = 2000.0
_BALL = {1: lambda r: 2 * r, 2: lambda r: math.pi * r**2, 3: lambda r: 4 / 3 * math.pi * r**3}


class StructureError(ValueError):
    """A structure for which the quantity asked for does not exist or cannot sensibly be computed."""


def periodic_measure(cell: np.ndarray, pbc: np.ndarray) -> float:
    """Length, area or volume (Å, Å², Å³) spanned by the periodic rows of the ``[3, 3]`` cell; 0 if degenerate."""
    rows = np.asarray(cell, dtype=np.float64).reshape(3, 3)[np.asarray(pbc, dtype=bool).reshape(3)]
    if len(rows) == 0:
        return math.inf
    return float(math.sqrt(max(np.linalg.det(rows @ rows.T), 0.0)))


def _describe(cell: np.ndarray, pbc: np.ndarray) -> str:
    cell_text = np.array2string(np.asarray(cell, dtype=np.float64).reshape(3, 3), precision=4, separator=",")
    return f"cell={' '.join(cell_text.split())} pbc={np.asarray(pbc, dtype=bool).reshape(3).tolist()}"


def estimated_neighbors_per_atom(num_atoms: int, cell: np.ndarray, pbc: np.ndarray, radial_cutoff: float) -> float:
    """Upper estimate of neighbors per atom within ``radial_cutoff`` (Å) from the periodic images (module docstring)."""
    periodic = int(np.asarray(pbc, dtype=bool).sum())
    if periodic == 0:
        return float(num_atoms - 1)
    measure = periodic_measure(cell, pbc)
    return math.inf if measure == 0 else num_atoms * _BALL[periodic](radial_cutoff) / measure


def check_neighbor_list_size(
    num_atoms: int, cell: np.ndarray, pbc: np.ndarray, radial_cutoff: float, limit: float = MAX_NEIGHBORS_PER_ATOM
) -> None:
    """Raise :class:`StructureError` for a degenerate periodic cell, or when the estimate exceeds ``limit``.

    Args:
        num_atoms: atoms in the cell.
        cell: ``[3, 3]``, rows are lattice vectors, Å.
        pbc: ``[3]`` bool.
        radial_cutoff: Å.
        limit: largest accepted estimate of neighbors per atom.
    """
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    if pbc.any() and periodic_measure(cell, pbc) <= 1e-12:
        raise StructureError(
            f"the periodic cell spans no {('length', 'area', 'volume')[int(pbc.sum()) - 1]} ({_describe(cell, pbc)}); "
            "give the lattice vectors, or set pbc False along directions without one"
        )
    estimate = estimated_neighbors_per_atom(num_atoms, cell, pbc, radial_cutoff)
    if estimate > limit:
        raise StructureError(
            f"about {estimate:.3g} neighbors per atom within {radial_cutoff} Å (more than {limit:.0f}): the periodic "
            f"cell is far too small for the cutoff ({_describe(cell, pbc)}); check the cell's units and size"
        )


def closest_pair(
    positions: np.ndarray, sender: np.ndarray, receiver: np.ndarray, shift_vectors: np.ndarray
) -> tuple[float, int, int]:
    """``(distance Å, atom i, atom j)`` of the shortest edge; ``(inf, -1, -1)`` without edges.

    Args:
        positions: ``[n, 3]`` Å.
        sender, receiver: ``[E]`` atom indices of each edge.
        shift_vectors: ``[E, 3]`` Å, the lattice shift of each edge (``cell_offsets @ cell``).
    """
    if len(sender) == 0:
        return math.inf, -1, -1
    vectors = positions[receiver] - positions[sender] + shift_vectors
    lengths = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    edge = int(np.argmin(lengths))
    return float(lengths[edge]), int(sender[edge]), int(receiver[edge])
