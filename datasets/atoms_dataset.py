"""The dataset that turns frames into labelled graphs.

:class:`AtomsDataset` concatenates the frame sources of its paths, each opened by
:func:`~equimol.datasets.sources.open_source` (LMDB, OC20 raw pairs, large extxyz, anything ASE
reads: see :mod:`~equimol.datasets.sources`). :func:`record_to_graph` builds the radius graph of
:mod:`equimol.graph` and attaches the labels below, with the energy reference and force mask from
:class:`LabelSettings`.

**Labels** (float labels in the requested dtype; a batch concatenates them along the first axis):

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
``weight``          ``[1]``          loss weight of the structure's ``config_type`` (only with
                                     ``config_type_weights``)
==================  ===============  =========================================================
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch_geometric.data import Data

from equimol.errors import EquimolInputError
from equimol.graph import structure_to_graph
from equimol.structure_checks import StructureError, closest_pair

from .readers import DEFAULT_KEYS, DataFormatError, LabelKeys
from .references import ElementReferences, SystemReferences
from .sources import open_source


@dataclass(frozen=True)
class LabelSettings:
    """How frames become labelled graphs.

    Attributes:
        radial_cutoff: Å.
        dtype: floating dtype of positions and float labels.
        energy_target: ``"total"`` (energies as stored) or ``"adsorption"`` (minus the per-system reference).
        element_references: subtract :math:`\\sum_i c_{Z_i}` when given.
        system_references: per-system references for ``"adsorption"`` (frames' ``reference_energy`` first).
        forces_on: ``"all"`` atoms or only ``"free"`` (not fixed) atoms count in the force loss.
        min_distance: a frame with two atoms closer than this (Å) is an error; ``None`` allows any distance.
        config_type_weights: ``{config_type: weight}`` (``Default`` for unlisted types, else 1), attached to
            each graph as ``weight``; ``None`` attaches none.
    """

    radial_cutoff: float
    dtype: torch.dtype = torch.float64
    energy_target: Literal["total", "adsorption"] = "total"
    element_references: ElementReferences | None = None
    system_references: SystemReferences | None = None
    forces_on: Literal["all", "free"] = "all"
    min_distance: float | None = None
    config_type_weights: Mapping[str, float] | None = None


def reference_energy(record: Data, settings: LabelSettings, where: str) -> float:
    """Energy subtracted from the stored energy of ``record`` (eV) under ``settings``."""
    shift = 0.0
    if settings.energy_target == "adsorption":
        references = settings.system_references or SystemReferences()
        stored = record.reference_energy if "reference_energy" in record else None
        shift += references.energy(record.sid if "sid" in record else None, stored, where)
    if settings.element_references is not None:
        shift += settings.element_references.energy(record.atomic_numbers.numpy(), where)
    return shift


def check_min_distance(
    positions: np.ndarray, cell: np.ndarray, edges: tuple[np.ndarray, ...], threshold: float, where: str
) -> None:
    """Raise :class:`DataFormatError` naming ``where`` if two atoms are closer than ``threshold`` (Å).

    Args:
        positions: ``[n, 3]`` Å; cell: ``[3, 3]`` Å (zeros when not periodic).
        edges: ``(sender [E], receiver [E], cell_offsets [E, 3])`` of :func:`equimol.graph.neighbor_list`.
    """
    sender, receiver, offsets = edges
    shifts = np.asarray(offsets, dtype=np.float64) @ np.asarray(cell, dtype=np.float64).reshape(3, 3)
    distance, i, j = closest_pair(np.asarray(positions, dtype=np.float64), sender, receiver, shifts)
    if distance < threshold:
        raise DataFormatError(
            f"{where}: atoms {i} and {j} are {distance:.4g} Å apart, closer than data.min_distance={threshold} Å; "
            "fix or drop the frame, or lower data.min_distance (null allows any distance)"
        )


def record_to_graph(record: Data, settings: LabelSettings, where: str = "") -> Data:
    """Radius graph of one frame record (:mod:`equimol.graph`) with the labels of the module docstring."""
    cell, pbc = record.cell.reshape(3, 3).numpy(), record.pbc.reshape(3).numpy()
    try:
        graph = structure_to_graph(
            record.pos.numpy(), record.atomic_numbers.numpy(), cell, pbc, settings.radial_cutoff, settings.dtype
        )
    except StructureError as error:  # a degenerate or far too small periodic cell: refused before building
        raise DataFormatError(f"{where}: {error}") from error
    except RuntimeError as error:  # vesin
        raise DataFormatError(
            f"{where}: no neighbor list ({error}); pbc={pbc.tolist()}, cell={cell.tolist()}"
        ) from error
    if settings.min_distance is not None:
        edges = (*graph.edge_index.numpy(), graph.cell_offsets.double().numpy())
        check_min_distance(
            graph.pos.double().numpy(), graph.cell.reshape(3, 3).double().numpy(), edges, settings.min_distance, where
        )
    n = graph.num_nodes
    if "energy" in record:
        energy = record.energy - reference_energy(record, settings, where)
        graph.energy = torch.tensor([energy], dtype=settings.dtype)
    if "forces" in record:
        graph.forces = record.forces.to(settings.dtype)
    if "stress" in record:
        graph.stress = record.stress.reshape(1, 3, 3).to(settings.dtype)
    graph.fixed = record.fixed.bool()
    graph.tags = record.tags.long()
    graph.force_mask = ~graph.fixed if settings.forces_on == "free" else torch.ones(n, dtype=torch.bool)
    graph.natoms = torch.tensor([n], dtype=torch.long)
    if "sid" in record and record.sid is not None:
        graph.sid = record.sid
    if "fid" in record and record.fid is not None:
        graph.fid = torch.tensor([int(record.fid)], dtype=torch.long)
    weights = settings.config_type_weights
    if weights is not None:
        config_type = record.config_type if "config_type" in record else None
        weight = float(weights.get(config_type, weights.get("Default", 1.0)))
        graph.weight = torch.tensor([weight], dtype=settings.dtype)
    return graph


class AtomsDataset(torch.utils.data.Dataset):
    """Concatenation of frame sources, returning labelled graphs (``dataset[i]``) or raw records (``record(i)``)."""

    def __init__(self, paths: Sequence[str | Path], settings: LabelSettings, keys: LabelKeys = DEFAULT_KEYS) -> None:
        if isinstance(paths, str | Path):
            paths = [paths]
        if not paths:
            raise EquimolInputError("AtomsDataset needs at least one data path")
        self.paths = [Path(p) for p in paths]
        self.settings = settings
        self.keys = keys
        self.sources = [open_source(p, keys) for p in self.paths]
        self._offsets = np.concatenate([[0], np.cumsum([len(s) for s in self.sources])]).astype(np.int64).tolist()

    def __len__(self) -> int:
        return self._offsets[-1]

    def _locate(self, index: int) -> tuple[int, int]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range [0, {len(self)})")
        source = bisect.bisect_right(self._offsets, index) - 1
        return source, index - self._offsets[source]

    def record(self, index: int) -> Data:
        """The frame record (no graph) of frame ``index``."""
        source, local = self._locate(int(index))
        return self.sources[source][local]

    def where(self, index: int) -> str:
        """``"<path>, frame <k>"`` for error messages."""
        source, local = self._locate(int(index))
        return f"{self.paths[source]}, frame {local}"

    def __getitem__(self, index: int) -> Data:
        return record_to_graph(self.record(index), self.settings, self.where(index))

    def atom_counts(self, indices: np.ndarray | None = None) -> np.ndarray:
        """``[len(indices)]`` atoms of frames ``indices`` (all when ``None``), without reading LMDB frames.

        LMDB sources answer from their atom-count index (:mod:`~equimol.datasets.lmdb_index`), in-memory
        sources from their records.
        """
        counts = np.concatenate([source.atom_counts() for source in self.sources])
        return counts if indices is None else counts[np.asarray(indices, dtype=np.int64)]

    def files(self) -> list[Path]:
        """Every file the dataset reads (for cache fingerprints)."""
        return [file for source in self.sources for file in source.files]


def split_isolated_atoms(dataset: AtomsDataset, isolated_atom_type: str | None) -> tuple[np.ndarray, list[int]]:
    """``(kept frames, isolated-atom frames)`` of ``dataset``: one-atom frames whose ``config_type`` is
    ``isolated_atom_type`` hold E0s and are never trained or evaluated on (``None``: none are).

    Only one-atom frames are read (LMDB and large extxyz sources answer atom counts from their index);
    an LMDB without its atom-count index (fairchem's) is not searched.
    """
    frames = np.arange(len(dataset))
    if isolated_atom_type is None:
        return frames, []
    isolated = []
    for source, start in zip(dataset.sources, dataset._offsets):
        try:
            single = np.flatnonzero(source.atom_counts() == 1) + start
        except DataFormatError:  # no atom-count index: `equimol data index` writes one
            continue
        isolated += [
            int(i) for i in single if getattr(dataset.record(int(i)), "config_type", None) == isolated_atom_type
        ]
    return np.setdiff1d(frames, isolated), isolated
