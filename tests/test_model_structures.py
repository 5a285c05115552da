"""Test structures for the model tests, and a check that the symmetric ones really are degenerate.

Real frames: a 3BPA molecule (27 atoms, non-periodic) and an OC20 slab (33 atoms, periodic in three
directions). Built ones with degenerate Laplacian spectra, where naive eigenvector gradients are NaN
(``shared/NOTES.md`` section 2): CH4, benzene, a 2x2x2 fcc Cu supercell (cubic cell, 32 atoms, periodic) and a planar
square of four atoms. Other test modules import the builders from here.
"""

from __future__ import annotations

import json
from pathlib import Path

import ase.build
import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms

from equimol.graph import atoms_to_graph
from equimol.models import build_model
from equimol.nn.radial import PolynomialEnvelope
from equimol.nn.spe import dense_laplacian

RADIAL_CUTOFF = 3.5
SPECIES = ["H", "C", "N", "O", "Na", "Cu", "Au"]
DEGENERATE = ("ch4", "benzene", "cu_fcc", "square")
ALL_STRUCTURES = ("3bpa", "oc20", *DEGENERATE)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Run this module's tiny models on one thread, then restore the caller's setting.

    On a shared 2-core machine two intra-op threads per process oversubscribe the cores: measured 2.4 s
    vs 0.13 s for one finite-difference force test. Modules that import this fixture get it too.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def build_structure(name: str, shared_data: Path | None = None) -> Atoms:
    """One of :data:`ALL_STRUCTURES` as ASE ``Atoms``."""
    if name == "3bpa":
        return ase.io.read(shared_data / "3bpa" / "train_300K.xyz", index=0)
    if name == "oc20":
        return ase.io.read(shared_data / "oc20" / "dft_relaxation_trajs_2020" / "random1000100.traj", index=0)
    if name == "ch4":
        return ase.build.molecule("CH4")
    if name == "benzene":
        return ase.build.molecule("C6H6")
    if name == "cu_fcc":
        # The cubic cell repeated: 32 atoms, 7.22 Å edges, so with a 3.5 Å cutoff no atom sees two images
        # of the same neighbor (in the 8-atom primitive 2x2x2 cell, image pairs at +-r cancel every
        # derivative of the Laplacian and all gradients vanish identically).
        return ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    if name == "square":
        side = 1.4
        return Atoms("C4", positions=[[0, 0, 0], [side, 0, 0], [side, side, 0], [0, side, 0]])
    raise KeyError(name)


def tiny_config(**overrides) -> dict:
    """A small model (4 channels, lmax 2, 2 layers, CG many-body, SPE on) for fast tests."""
    config = {
        "species": SPECIES,
        "channels": 4,
        "lmax": 2,
        "num_layers": 2,
        "num_radial_basis": 6,
        "radial_cutoff": RADIAL_CUTOFF,
        "radial_mlp_hidden": [8],
        "readout_hidden": 8,
        "many_body": "cg",
        "correlation": 2,
        "avg_num_neighbors": 8.0,
        "spe": {"enabled": True, "mode": "chebyshev", "num_filters": 3, "polynomial_degree": 6, "hidden": 8},
        "dtype": "float64",
        "seed": 7,
    }
    for key, value in overrides.items():
        if key == "spe":
            config["spe"] = {**config["spe"], **value}
        else:
            config[key] = value
    return config


_MODEL_CACHE: dict[str, torch.nn.Module] = {}


def tiny_model(**overrides):
    """A tiny model in eval mode (forces without ``create_graph``), cached per configuration.

    Building e3nn products and their first call cost about a second each, so tests that only read
    a model share it; tests that train or modify a model use ``build_model(tiny_config(...))``.
    """
    key = json.dumps(overrides, sort_keys=True)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = build_model(tiny_config(**overrides)).eval()
    return _MODEL_CACHE[key]


def graph_of(atoms: Atoms, dtype: torch.dtype = torch.float64):
    return atoms_to_graph(atoms, RADIAL_CUTOFF, dtype)


@pytest.mark.parametrize("name", DEGENERATE)
def test_symmetric_structures_have_degenerate_laplacian_spectra(name):
    """Each symmetric structure's smooth-weight Laplacian has a repeated eigenvalue.

    Gap below 1e-6: exact repeats (~1e-15) for CH4, Cu and the square; 3.4e-8 for ASE's benzene, whose
    tabulated coordinates are D6h only to about 1e-8. Either way eigh's backward (1 / gap) is useless.
    """
    graph = graph_of(build_structure(name))
    sender, receiver = graph.edge_index
    lengths = (graph.pos[receiver] - graph.pos[sender] + graph.cell_offsets @ graph.cell[0]).norm(dim=-1)
    weights = PolynomialEnvelope(RADIAL_CUTOFF)(lengths)
    eigenvalues = torch.linalg.eigvalsh(dense_laplacian(weights, sender, receiver, graph.num_nodes))
    gaps = np.diff(eigenvalues.numpy())
    assert gaps.min() < 1e-6, f"{name}: smallest eigenvalue gap {gaps.min():.3e}"
    assert eigenvalues.max() > 0.1  # a connected, non-trivial graph


def test_real_frames_load(shared_data):
    assert len(build_structure("3bpa", shared_data)) == 27
    slab = build_structure("oc20", shared_data)
    assert len(slab) == 33 and slab.pbc.all()
