"""Energy and forces are continuous (indeed C^2 / C^1) as an atom crosses the radial cutoff.

An O atom moves along a line away from a CH4 molecule so that its distance to the nearest atom
crosses the 3.5 Å cutoff; the radius graph is rebuilt at every point, so edges really appear and vanish
(SPE on, both modes, and the Laplacian weights vanish there too).

Tolerances: with the C^2 envelope, ``E(r_c - d) - E(r_c + d) = O(d^3)`` and the force jump is
``O(d^2)``. Measured (chebyshev SPE, 2-core CPU): energy jumps 1.1e-10 / 1.1e-13 eV and force jumps
3.2e-7 / 3.2e-9 eV/Å at d = 1e-3 / 1e-4 Å, i.e. the cubic and quadratic orders. The test asserts the
orders (jump ratios over a decade of ``d`` above 500 and 50) and 1e-9 eV, 1e-6 eV/Å at d = 1e-4 Å.
"""

from __future__ import annotations

import numpy as np
import pytest
import test_model_structures as structures
import torch
from ase import Atoms
from test_model_structures import single_thread  # noqa: F401  (autouse fixture)

from equimol.models import build_model


def _with_probe(distance: float) -> Atoms:
    """CH4 plus an O atom on the +x axis at ``distance`` Å from the outermost +x atom."""
    molecule = structures.build_structure("ch4")
    outermost = molecule.positions[np.argmax(molecule.positions[:, 0])]
    probe = outermost + np.array([distance, 0.0, 0.0])
    return molecule + Atoms("O", positions=[probe])


def _evaluate(model, distance: float):
    graph = structures.graph_of(_with_probe(distance))
    out = model(graph)
    return graph.edge_index.shape[1], out["energy"].item(), out["forces"].detach()


@pytest.mark.parametrize("mode", ["exact", "chebyshev"])
def test_energy_and_forces_continuous_across_the_cutoff(mode):
    model = structures.tiny_model(spe={"mode": mode})
    step = 1e-4
    edges_in, energy_in, forces_in = _evaluate(model, structures.RADIAL_CUTOFF - step)
    edges_out, energy_out, forces_out = _evaluate(model, structures.RADIAL_CUTOFF + step)
    assert edges_in == edges_out + 2  # the probe's edge to the outermost atom, both directions
    assert abs(energy_in - energy_out) <= 1e-9
    assert (forces_in - forces_out).abs().max() <= 1e-6
    jumps = {}
    for distance in (1e-2, 1e-3):
        _, energy_a, forces_a = _evaluate(model, structures.RADIAL_CUTOFF - distance)
        _, energy_b, forces_b = _evaluate(model, structures.RADIAL_CUTOFF + distance)
        jumps[distance] = (abs(energy_a - energy_b), (forces_a - forces_b).abs().max().item())
    assert jumps[1e-2][0] > 500 * jumps[1e-3][0]  # cubic: energy is C^2 at the cutoff
    assert jumps[1e-2][1] > 50 * jumps[1e-3][1]  # quadratic: forces are C^1
    # Beyond the cutoff of every atom the probe no longer interacts: its force is exactly zero.
    _, _, far = _evaluate(model, structures.RADIAL_CUTOFF + 0.5)
    assert torch.equal(far[-1], torch.zeros(3, dtype=torch.float64))


def test_scan_across_the_cutoff_is_smooth():
    """On a 41-point scan the forces are minus the slope of the energy, also across the cutoff.

    Central differences on a 0.01 Å grid have error ``h^2 F'' / 6``; measured worst 1.1e-5 eV/Å against
    forces up to 0.011 eV/Å, so 1e-2 relative (1.1e-4 eV/Å) is a 10x margin.
    """
    model = structures.tiny_model()
    distances = np.linspace(structures.RADIAL_CUTOFF - 0.2, structures.RADIAL_CUTOFF + 0.2, 41)
    energies = np.array([_evaluate(model, d)[1] for d in distances])
    forces_x = np.array([_evaluate(model, d)[2][-1, 0].item() for d in distances])
    spacing = distances[1] - distances[0]
    # Forces are minus the slope of the energy along the scan (the probe moves along +x).
    slope = -np.gradient(energies, spacing)
    assert np.isfinite(energies).all() and np.abs(forces_x).max() > 1e-3
    assert np.abs(slope[1:-1] - forces_x[1:-1]).max() <= 1e-2 * np.abs(forces_x).max()
    assert np.abs(energies[distances > structures.RADIAL_CUTOFF + 1e-9] - energies[-1]).max() <= 1e-12


def test_double_backward_of_force_and_stress_losses_is_finite():
    model = build_model(structures.tiny_config(spe={"mode": "exact"})).train()
    graph = structures.graph_of(structures.build_structure("cu_fcc"))
    out = model(graph, compute_stress=True)
    loss = (out["forces"] ** 2).sum() + (out["stress"] ** 2).sum() + out["energy"].pow(2).sum()
    loss.backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)
