"""Where each dataset comes from, for users who fetch a local copy (tests never download anything).

equimol reads local files only. Point ``data_dir`` (or ``$EQUIMOL_DATA_DIR``) at a folder laid out
as below, then use the DataModule presets with their default relative paths:

.. code-block:: text

    $EQUIMOL_DATA_DIR/3bpa/{train_300K,test_300K,test_600K,test_1200K,iso_atoms}.xyz
    $EQUIMOL_DATA_DIR/oc20/<split>/*.lmdb   (or *.extxyz.xz + *.txt.xz)   oc20/oc20_linref.npz
    $EQUIMOL_DATA_DIR/oc22/<split>/*.lmdb   oc22/oc22_linfit_coeffs.npz
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .config import DATA_DIR_VARIABLE


@dataclass(frozen=True)
class DatasetSource:
    """A dataset's public home, the files it provides and the sub-folder equimol expects them in."""

    name: str
    folder: str
    urls: tuple[str, ...]
    licence: str
    notes: str


SOURCES: dict[str, DatasetSource] = {
    "3bpa": DatasetSource(
        name="3BPA (Kovács et al., J. Chem. Theory Comput. 17, 7696, 2021)",
        folder="3bpa",
        urls=("https://github.com/davkovacs/BOTNet-datasets (folder dataset_3BPA)",),
        licence="MIT",
        notes="extxyz; energy key 'energy', forces key 'forces'; isolated-atom E0s in iso_atoms.xyz.",
    ),
    "oc20": DatasetSource(
        name="Open Catalyst 2020 (Chanussot et al., ACS Catal. 11, 6059, 2021)",
        folder="oc20",
        urls=(
            "https://facebookresearch.github.io/fairchem/oc20",
            "https://dl.fbaipublicfiles.com/opencatalystproject/data/s2ef_train_200K.tar",
            "https://dl.fbaipublicfiles.com/opencatalystproject/data/s2ef_val_id.tar",
        ),
        licence="CC BY 4.0",
        notes="S2EF as LMDB (adsorption energies) or raw *.extxyz.xz + *.txt.xz pairs (total energies + "
        "per-system references); linear references in configs/oc20/s2ef/oc20_linref.npz of fairchem.",
    ),
    "oc22": DatasetSource(
        name="Open Catalyst 2022 (Tran et al., ACS Catal. 13, 3066, 2023)",
        folder="oc22",
        urls=(
            "https://facebookresearch.github.io/fairchem/oc22",
            "https://dl.fbaipublicfiles.com/opencatalystproject/data/oc22/s2ef_total_train_val_test_lmdbs.tar.gz",
        ),
        licence="CC BY 4.0",
        notes="S2EF-Total LMDBs (total energies); linear references in "
        "configs/oc22/linref/oc22_linfit_coeffs.npz of fairchem.",
    ),
}


def data_dir(path: str | Path | None = None) -> Path:
    """The local data root: ``path``, else ``$EQUIMOL_DATA_DIR``; an error says how to set it."""
    root = path if path is not None else os.environ.get(DATA_DIR_VARIABLE)
    if root is None:
        raise FileNotFoundError(f"no data folder: pass data_dir= or set ${DATA_DIR_VARIABLE}")
    return Path(root).expanduser()


def describe(name: str) -> str:
    """Where to fetch dataset ``name`` (``3bpa``, ``oc20``, ``oc22``) and where to put it."""
    if name not in SOURCES:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(SOURCES)}")
    source = SOURCES[name]
    urls = "\n".join(f"  {url}" for url in source.urls)
    return (
        f"{source.name}\nlicence: {source.licence}\nfetch from:\n{urls}\n"
        f"place under: ${DATA_DIR_VARIABLE}/{source.folder}/\n{source.notes}"
    )
