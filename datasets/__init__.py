"""Dataset readers and Lightning DataModules (installed as ``equimol.datasets``).

- :mod:`~equimol.datasets.graph`: the radius-graph format and edge convention.
- :mod:`~equimol.datasets.readers`: ASE-readable files (extxyz, traj, db) to frame records.
- :mod:`~equimol.datasets.oc20_raw`: OC20 raw S2EF ``extxyz.xz``/``txt.xz`` pairs.
- :mod:`~equimol.datasets.lmdb_dataset`: OC20/OC22 LMDBs, lazy reading and writing.
- :mod:`~equimol.datasets.references`: per-element (E0s, ``coeff[Z]``) and per-system references.
- :mod:`~equimol.datasets.atoms_dataset`: frames to labelled graphs.
- :mod:`~equimol.datasets.statistics`: cached dataset statistics for the model.
- :mod:`~equimol.datasets.samplers`: seeded batching by structure count or edge budget.
- :mod:`~equimol.datasets.datamodule`: ``AtomsDataModule`` and the 3BPA/OC20/OC22 presets.
- :mod:`~equimol.datasets.download`: where each dataset comes from.
"""

from __future__ import annotations

import importlib

# Names load on first use (PEP 562) so that ``import equimol.datasets.graph`` stays light: the
# DataModules pull in Lightning, which the model code does not need.
_EXPORTS = {
    "AtomsDataModule": "datamodule",
    "OC20DataModule": "datamodule",
    "OC22DataModule": "datamodule",
    "ThreeBPADataModule": "datamodule",
    "AtomsDataset": "atoms_dataset",
    "LabelSettings": "atoms_dataset",
    "record_to_graph": "atoms_dataset",
    "atoms_to_graph": "graph",
    "edge_vectors": "graph",
    "neighbor_list": "graph",
    "structure_to_graph": "graph",
    "DataFormatError": "readers",
    "LabelKeys": "readers",
    "ElementReferences": "references",
    "SystemReferences": "references",
    "DatasetStatistics": "statistics",
    "cached_statistics": "statistics",
    "compute_statistics": "statistics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
