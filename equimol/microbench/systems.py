"""Small systems shared by the benchmarks and the tests: tiny random potentials, fcc boxes, a LAMMPS instance.

The potentials are *untrained* (random weights from :func:`equimol.models.build_model`, float64):
smooth, rotation-invariant many-body functions of the positions, which is all a timing or an
integration check needs. ``energy_scale: 5`` gives forces of about 0.1 to 1 eV/Å on these boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Elements of :func:`periodic_structures` (Cu, Pd, Ag, Au).
SPECIES = [29, 46, 47, 79]
#: ``(element, lattice constant Å, repeat)`` of the eight boxes of :func:`periodic_structures`.
BOXES = [("Cu", 3.6, (1, 1, 1)), ("Au", 4.1, (2, 1, 1)), ("Ag", 4.1, (1, 1, 2)), ("Pd", 3.9, (1, 2, 2))]
BOXES += [("Cu", 3.7, (2, 2, 1)), ("Au", 4.0, (1, 1, 1)), ("Pd", 3.9, (2, 2, 2)), ("Ag", 4.1, (1, 2, 1))]
#: LAMMPS element names of :func:`cu_au_box`, in type order, and the time step of :func:`open_lammps`.
ELEMENTS = ["Cu", "Au"]
TIMESTEP_FS = 1.0


def small_model(species: list, seed: int = 0, **options):
    """A random 2-layer potential (8 channels, L = 1, cutoff 4 Å, float64) for ``species``; ``options`` override."""
    from equimol.models import build_model

    config = {
        "species": species,
        "channels": 8,
        "lmax": 1,
        "num_layers": 2,
        "num_radial_basis": 6,
        "radial_cutoff": 4.0,
        "radial_mlp_hidden": [16],
        "readout_hidden": 8,
        "avg_num_neighbors": 10.0,
        "seed": seed,
        "dtype": "float64",
        **options,
    }
    return build_model(config)


def tiny_model_section(species: Sequence[str], **changes: object) -> dict:
    """The ``model:`` section of the tiny training runs (4 channels, L = 1, one layer), ``changes`` applied.

    Statistics are ``auto`` (from the training data) except what ``changes`` sets, e.g.
    ``radial_cutoff=4.0`` or ``e0s=None``.
    """
    section = {
        "species": list(species),
        "channels": 4,
        "lmax": 1,
        "num_layers": 1,
        "num_radial_basis": 4,
        "radial_mlp_hidden": [8],
        "readout_hidden": 4,
        "avg_num_neighbors": "auto",
        "e0s": "auto",
        "energy_shift": "auto",
        "energy_scale": "auto",
    }
    return {**section, **changes}


def cu_au_box(tilt: float = 0.0, temperature_k: float = 300.0, repeat: int = 2):
    """``4 repeat^3`` atoms of fcc Cu, every 4th Au, rattled, in a LAMMPS-form (lower-triangular) cell; seeded
    velocities."""
    from ase.build import bulk
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((repeat, repeat, repeat))
    atoms.numbers[::4] = 79
    cell = atoms.get_cell()[:]
    cell[1, 0] += tilt * cell[1, 1]
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.05, seed=1)
    if temperature_k > 0:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_k, rng=np.random.default_rng(0))
    return atoms


def periodic_structures(temperature_k: float = 300.0) -> list:
    """8 rattled fcc boxes (4 of them sheared) of 4 to 32 atoms, ~30 % of the atoms swapped to random elements."""
    from ase.build import bulk
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    generator = np.random.default_rng(0)
    structures = []
    for seed, (element, a, repeat) in enumerate(BOXES):
        atoms = bulk(element, "fcc", a=a, cubic=True).repeat(repeat)
        swap = generator.random(len(atoms)) < 0.3
        atoms.numbers[swap] = generator.choice(SPECIES, size=int(swap.sum()))
        if seed % 2:  # triclinic: a transposed cell would show
            atoms.set_cell(atoms.cell[:] + np.outer([0, 1, 0], atoms.cell[0]) * 0.15, scale_atoms=True)
        atoms.rattle(0.05, seed=seed)
        if temperature_k:
            MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_k, rng=np.random.default_rng(seed))
        structures.append(atoms)
    return structures


def open_lammps(atoms, comm=None, elements=ELEMENTS, integrate: bool = True, pair_style: str | None = None):
    """A LAMMPS instance (``units metal``) holding ``atoms`` with ``fix equimol`` defined, NVE integration.

    ``pair_style``: commands that set the potential up instead of ``fix equimol`` (e.g.
    :func:`equimol.lammps.plugin_commands`).
    """
    from equimol.lammps import create_box_from_atoms, load_lammps

    lammps = load_lammps()
    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"], comm=comm)
    lmp.commands_string("units metal\natom_style atomic\natom_modify map yes\nnewton on")
    create_box_from_atoms(lmp, atoms, elements)
    lmp.commands_string(
        (pair_style or "fix equimol all external pf/callback 1 1\nfix_modify equimol energy yes virial yes") + "\n"
        f"timestep {TIMESTEP_FS / 1000.0!r}\n"
        "thermo_style custom step pe ke etotal press pxx pyy pzz pxy pxz pyz\n"
        "neighbor 1.0 bin"
    )
    if integrate:
        lmp.command("fix integrate all nve")
    return lmp
