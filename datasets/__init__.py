"""Dataset readers and Lightning DataModules (installed as ``equimol.datasets``).

The graph format itself lives in the core, :mod:`equimol.graph`. Import names from their modules
(``from equimol.datasets.datamodule import AtomsDataModule``): this package re-exports nothing, so
that reading or converting data (``equimol data``, ``equimol eval``) never loads Lightning.

- :mod:`~equimol.datasets.sources`: ``open_source(path)``, the one chooser of a path's format;
  :mod:`~equimol.datasets.frame_source`: the interface every format implements.
- :mod:`~equimol.datasets.readers`: ASE ``Atoms`` to frame records (the record layout, the label checks);
  :mod:`~equimol.datasets.ase_frames`: any file ASE reads, as a source.
- :mod:`~equimol.datasets.extxyz_index`: large plain extxyz files, frames parsed on access.
- :mod:`~equimol.datasets.oc20_raw`: OC20 raw S2EF ``extxyz.xz``/``txt.xz`` pairs.
- :mod:`~equimol.datasets.lmdb_dataset`: OC20/OC22 LMDBs, lazy reading and writing; their files and
  environments in :mod:`~equimol.datasets.lmdb_store`, the atom-count index in :mod:`~equimol.datasets.lmdb_index`.
- :mod:`~equimol.datasets.references`: per-element (E0s, ``coeff[Z]``) and per-system references.
- :mod:`~equimol.datasets.atoms_dataset`: frames to labelled graphs.
- :mod:`~equimol.datasets.statistics`: cached dataset statistics for the model.
- :mod:`~equimol.datasets.samplers`: seeded batching by structure count or edge budget.
- :mod:`~equimol.datasets.datamodule`: ``AtomsDataModule`` and the 3BPA/OC20/OC22 presets.
- :mod:`~equimol.datasets.download`: where each dataset comes from.
"""
