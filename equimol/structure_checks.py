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
* **Cells vesin cannot bin** (:func:`check_cell_list`). vesin sorts atoms into
  :math:`n_i = \max(1, \lfloor d_i / r_c \rfloor)` bins along each direction, :math:`d_i` the distance
  between the faces of its box (periodic directions: the lattice-plane spacing; others: 1.01 times the
  extent of the positions along that Cartesian axis). Above :data:`VESIN_MAX_BINS` bins in all it scales
  every :math:`n_i` by :math:`(10^5 / \prod n)^{1/3}`, truncating: a direction with few bins beside one
  with many (a 3.6 x 10^6 x 3.6 Å cell, two molecules 10^6 Å apart, a NaN or 1e300 entry) gets 0 bins,
  and vesin divides by it, which kills the process (SIGFPE, no message). It then visits
  :math:`\prod_i n_i (2 s_i + 1)` bins, :math:`s_i = \lceil r_c n_i / d_i \rceil` (with some periodic and
  some non-periodic directions, :math:`s_i = n_i - 1` along the non-periodic ones), which a hugely skewed
  cell, or a slab with an atom far away in its vacuum, makes billions. Both are computed here as vesin
  (0.6) does, and refused above :data:`MAX_BIN_VISITS` before vesin is called, as are non-finite
  positions or cell entries and atoms more than :data:`MAX_CELLS_AWAY` cells outside a periodic cell
  (vesin keeps the bin index in 32 bits). Checked against vesin 0.6.2 on 205 cells and spreads: every
  structure predicted to crash crashed, and none other did.

Every refusal is a :class:`StructureError` (a ``ValueError``) that names the cell, pbc and what to do;
callers add which file, frame or structure it was.
"""

from __future__ import annotations

import math

import numpy as np

from equimol.errors import EquimolInputError

MAX_NEIGHBORS_PER_ATOM = 2000.0
VESIN_MAX_BINS = 1e5  # vesin's MAX_NUMBER_OF_CELLS (cpu_cell_list.cpp)
MAX_BIN_VISITS = 1e7  # bins times neighbouring bins vesin loops over: about 2 s at this size
MAX_CELLS_AWAY = 1e6
_BALL = {1: lambda r: 2 * r, 2: lambda r: math.pi * r**2, 3: lambda r: 4 / 3 * math.pi * r**3}


class StructureError(EquimolInputError):
    """A structure for which the quantity asked for does not exist or cannot sensibly be computed."""


def periodic_measure(cell: np.ndarray, pbc: np.ndarray) -> float:
    """Length, area or volume (Å, Å², Å³) spanned by the periodic rows of the ``[3, 3]`` cell; 0 if degenerate."""
    rows = np.asarray(cell, dtype=np.float64).reshape(3, 3)[np.asarray(pbc, dtype=bool).reshape(3)]
    if len(rows) == 0:
        return math.inf
    with np.errstate(all="ignore"):  # 1e300 entries overflow to inf, which the callers handle
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


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _vesin_box(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """The box matrix vesin uses: non-periodic rows replaced by unit vectors orthogonal to the periodic ones."""
    box = np.array(cell, dtype=np.float64).reshape(3, 3)
    periodic = np.flatnonzero(pbc)
    if len(periodic) == 0:
        return np.eye(3)
    if len(periodic) == 1:
        first = periodic[0]
        a = box[first]
        b = np.array([0.0, 0.0, 1.0]) if abs(_unit(a)[1]) > 0.9 else np.array([0.0, 1.0, 0.0])
        c = _unit(np.cross(a, b))
        box[(first + 1) % 3], box[(first + 2) % 3] = _unit(np.cross(c, a)), c
    elif len(periodic) == 2:
        box[3 - periodic[0] - periodic[1]] = _unit(np.cross(box[periodic[0]], box[periodic[1]]))
    return box


def vesin_bins(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float):
    """``(d [3], bins [3], search [3])``: vesin's face distances (Å), bins after its cap, and bins searched
    on each side, computed as its cell list does (module docstring). ``bins`` holds 0 where vesin would divide by 0.
    """
    box = _vesin_box(cell, pbc)
    normals = np.stack([np.cross(box[1], box[2]), np.cross(box[2], box[0]), np.cross(box[0], box[1])])
    with np.errstate(all="ignore"):
        spacing = np.abs(np.einsum("ij,ij->i", normals / np.linalg.norm(normals, axis=1, keepdims=True), box))
        extent = np.ptp(positions, axis=0) if len(positions) else np.zeros(3)
        extent = np.where(extent < 1e-6, 1.0, extent) * 1.01
        distance = np.where(pbc, spacing, extent)
        bins = np.maximum(np.trunc(distance / cutoff), 1.0)
        if np.prod(bins) > VESIN_MAX_BINS:  # vesin's rescaling, truncation for truncation
            x_over_y, y_over_z = bins[0] / bins[1], bins[1] / bins[2]
            bins[2] = np.trunc(np.cbrt(VESIN_MAX_BINS / (x_over_y * y_over_z * y_over_z)))
            bins[1] = np.trunc(y_over_z * bins[2])
            bins[0] = np.trunc(x_over_y * bins[1])
        search = np.maximum(np.ceil(cutoff * bins / distance), 1.0)
        if pbc.any() and not pbc.all():  # mixed pbc: vesin searches every bin along the non-periodic directions
            search = np.where(pbc, search, np.maximum(search, bins - 1))
    return distance, bins, search


def check_before_neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> None:
    """Every check a structure passes before its neighbor list is built (one place for every caller):
    finite values, a non-degenerate cell, a sane neighbor count (:func:`check_neighbor_list_size`), and a
    grid vesin can take (:func:`check_cell_list`).

    Raises:
        StructureError: the first check that fails, naming the cell and pbc.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        raise StructureError(f"non-finite (NaN or inf) positions of atoms {bad[:10].tolist()}")
    if pbc.any() and not np.isfinite(cell).all():
        raise StructureError(f"non-finite (NaN or inf) cell entries ({_describe(cell, pbc)})")
    if not math.isfinite(cutoff) or cutoff <= 0:
        raise StructureError(f"the cutoff must be a finite positive length, got {cutoff}")
    check_neighbor_list_size(len(positions), cell, pbc, cutoff)
    check_cell_list(positions, cell, pbc, cutoff)


def check_cell_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> None:
    """Raise :class:`StructureError` for a finite, non-degenerate structure that vesin's cell list would crash
    on or take hours over (module docstring): a direction without bins, too many bins to visit, atoms far out."""
    distance, bins, search = vesin_bins(positions, cell, pbc, cutoff)
    if not np.isfinite(distance).all() or (bins < 1).any():
        raise StructureError(
            f"the structure spans {np.array2string(distance, precision=4)} Å along its three directions against a "
            f"{cutoff} Å cutoff: too lopsided for the neighbor-list grid, which would crash; check the cell and "
            f"positions for wrong units or stray atoms ({_describe(cell, pbc)})"
        )
    visits = float(np.prod(bins) * np.prod(2 * search + 1))
    if visits > MAX_BIN_VISITS:
        raise StructureError(
            f"the neighbor list would search {visits:.3g} grid bins (the structure spans "
            f"{np.array2string(distance, precision=4)} Å along its three directions): reduce a skewed periodic cell "
            f"(ase.geometry.minkowski_reduce) or remove atoms far away from the rest ({_describe(cell, pbc)})"
        )
    if pbc.any():
        fractional = positions @ np.linalg.inv(_vesin_box(cell, pbc))
        away = np.abs(fractional[:, pbc]).max(initial=0.0)
        if away > MAX_CELLS_AWAY:
            raise StructureError(
                f"an atom lies {away:.3g} cells outside the periodic cell; wrap the positions into it "
                f"(atoms.wrap()) ({_describe(cell, pbc)})"
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
