"""Read anything :mod:`ase.io` reads (extxyz, traj, ASE db, ...) into frame records, with clear errors.

A **frame record** is a torch-geometric ``Data`` in the OC20 LMDB layout, before any graph is built.
Every reader in :mod:`equimol.datasets` (ASE files, OC20 raw S2EF pairs, OC20/OC22 LMDBs) produces
it, :mod:`equimol.datasets.lmdb_dataset` stores it, and :mod:`equimol.datasets.atoms_dataset` turns
it into a model graph:

====================  =============  =========================================================
``pos``               ``[n, 3]``     float64, Å
``cell``              ``[1, 3, 3]``  float64, rows are lattice vectors, Å
``pbc``               ``[1, 3]``     bool (absent in fairchem LMDBs: then periodic in 3D)
``atomic_numbers``    ``[n]``        int64
``natoms``            int            number of atoms
``tags``              ``[n]``        int64 (OC20: 0 sub-surface, 1 surface, 2 adsorbate)
``fixed``             ``[n]``        bool, True for atoms held fixed (ASE ``FixAtoms``)
``sid`` / ``fid``     any / int      system id and frame index in its trajectory or file
``energy``            float          eV, as stored (total unless the file says otherwise)
``forces``            ``[n, 3]``     float64, eV/Å (optional)
``stress``            ``[3, 3]``     float64, eV/Å³, ASE sign: positive = tensile (optional)
``reference_energy``  float          per-system reference, eV (optional; OC20 adsorption mode)
``config_type``       str            the frame's ``info[config_type_key]`` (MACE's ``config_type``; optional)
====================  =============  =========================================================

ASE >= 3.23 moves an extxyz frame's ``energy``/``forces``/``stress`` into a
``SinglePointCalculator``; a user's own keys (``REF_energy``, ``REF_forces``) stay in
``atoms.info``/``atoms.arrays``. Labels are therefore looked up in ``atoms.calc.results`` first
and then in ``info``/``arrays``, and a missing key raises an error that lists the keys present.

**Isolated atoms** (MACE's convention): a one-atom frame whose ``config_type`` is ``IsolatedAtom``
(:attr:`LabelKeys.isolated_atom_type`) holds an E0 and needs no forces; the data module takes such
frames out of training and uses their energies as the per-element references.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.constraints import FixAtoms
from ase.stress import voigt_6_to_full_3x3_stress
from torch_geometric.data import Data

from equimol.errors import EquimolInputError


class DataFormatError(EquimolInputError):
    """A data file, frame or key is malformed or missing; the message names which and why."""


@dataclass(frozen=True)
class LabelKeys:
    """Names of the labels in the input files (``energy`` or ``REF_energy``, ...).

    ``forces_key``/``stress_key`` may be ``None`` to skip that label. ``require_forces``: a frame
    without forces is an error (not silently dropped), except an isolated atom (``config_type`` equal to
    ``isolated_atom_type``, one atom). Stress is optional unless ``require_stress``. ``forces_hint``
    ends the missing-forces error: how the caller's user turns force labels off (a config key, a flag).
    """

    energy_key: str = "energy"
    forces_key: str | None = "forces"
    stress_key: str | None = "stress"
    require_energy: bool = True
    require_forces: bool = True
    require_stress: bool = False
    config_type_key: str = "config_type"
    isolated_atom_type: str | None = "IsolatedAtom"
    forces_hint: str = "forces_key=None"


DEFAULT_KEYS = LabelKeys()


def _present_keys(atoms: Atoms) -> list[str]:
    calc_keys = list(atoms.calc.results) if atoms.calc is not None and hasattr(atoms.calc, "results") else []
    array_keys = [key for key in atoms.arrays if key not in ("numbers", "positions")]
    return sorted(set(calc_keys) | set(atoms.info) | set(array_keys))


def _lookup(atoms: Atoms, key: str, per_atom: bool):
    """Value of ``key`` from ``atoms.calc.results``, then ``atoms.arrays`` (per atom) or ``atoms.info``."""
    results = getattr(atoms.calc, "results", None) if atoms.calc is not None else None
    if results and key in results and results[key] is not None:
        return results[key]
    if per_atom and key in atoms.arrays:
        return atoms.arrays[key]
    if key in atoms.info:
        return atoms.info[key]
    if not per_atom and key in atoms.arrays:
        return atoms.arrays[key]
    return None


def _where(source: str, frame: int | str) -> str:
    return f"{source}, frame {frame}"


def validate_structure(positions: np.ndarray, cell: np.ndarray, source: str, frame: int | str) -> None:
    """Reject frames that would poison training: zero atoms, non-finite coordinates or cell."""
    if positions.shape[0] == 0:
        raise DataFormatError(f"{_where(source, frame)}: the frame has zero atoms")
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise DataFormatError(f"{_where(source, frame)}: positions have shape {positions.shape}, expected [n, 3]")
    bad = ~np.isfinite(positions).all(axis=1)
    if bad.any():
        atoms_list = np.flatnonzero(bad)[:10].tolist()
        raise DataFormatError(f"{_where(source, frame)}: non-finite (NaN/inf) coordinates on atoms {atoms_list}")
    if not np.isfinite(cell).all():
        raise DataFormatError(f"{_where(source, frame)}: non-finite (NaN/inf) cell {cell.tolist()}")


def _fixed_mask(atoms: Atoms) -> np.ndarray:
    fixed = np.zeros(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            fixed[constraint.get_indices()] = True
    if "move_mask" in atoms.arrays:  # OC20 extxyz column when ASE did not turn it into FixAtoms
        fixed |= ~np.asarray(atoms.arrays["move_mask"], dtype=bool).reshape(len(atoms), -1).all(axis=1)
    return fixed


def atoms_to_record(
    atoms: Atoms, keys: LabelKeys, source: str, frame: int, sid: object = None, fid: int | None = None
) -> Data:
    """Turn one ASE ``Atoms`` into a frame record (layout in the module docstring), validating it.

    Args:
        atoms: the frame; labels read through ``atoms.calc`` and ``info``/``arrays``.
        keys: which keys hold energy, forces, stress.
        source: file name used in error messages (and the default ``sid``).
        frame: index of the frame in ``source`` (error messages, default ``fid``).
    """
    positions = np.asarray(atoms.get_positions(), dtype=np.float64)
    cell = np.asarray(atoms.get_cell()[:], dtype=np.float64)
    validate_structure(positions, cell, source, frame)
    n = len(atoms)
    record = Data(
        pos=torch.from_numpy(positions.copy()),
        cell=torch.from_numpy(cell.copy()).unsqueeze(0),
        pbc=torch.as_tensor(np.asarray(atoms.get_pbc(), dtype=bool)).unsqueeze(0),
        atomic_numbers=torch.as_tensor(atoms.get_atomic_numbers(), dtype=torch.long),
        natoms=n,
        tags=torch.as_tensor(atoms.get_tags(), dtype=torch.long),
        fixed=torch.from_numpy(_fixed_mask(atoms)),
        sid=Path(source).name.split(".")[0] if sid is None else sid,
        fid=frame if fid is None else fid,
    )
    config_type = atoms.info.get(keys.config_type_key)
    if config_type is not None:
        record.config_type = str(config_type)
    isolated = n == 1 and keys.isolated_atom_type is not None and config_type == keys.isolated_atom_type
    where = (atoms, source, frame)
    energy = _read_label(*where, keys.energy_key, "energy", per_atom=False, required=keys.require_energy)
    if energy is not None:
        energy = float(energy.reshape(-1)[0])
        if not np.isfinite(energy):
            raise DataFormatError(f"{_where(source, frame)}: energy {keys.energy_key!r} is {energy}")
        record.energy = energy
    if keys.forces_key is not None:
        hint = f"; {keys.forces_hint} trains on energies only (no force labels at all)"
        if keys.isolated_atom_type is not None:
            hint = f"; an isolated atom (an E0) needs {keys.config_type_key}={keys.isolated_atom_type}" + hint
        required = keys.require_forces and not isolated
        forces = _read_label(*where, keys.forces_key, "forces", per_atom=True, required=required, hint=hint)
        if forces is not None:
            if forces.shape != (n, 3):
                raise DataFormatError(
                    f"{_where(source, frame)}: forces {keys.forces_key!r} have shape {forces.shape}, expected ({n}, 3)"
                )
            if not np.isfinite(forces).all():
                raise DataFormatError(f"{_where(source, frame)}: non-finite forces in {keys.forces_key!r}")
            record.forces = torch.from_numpy(forces.copy())
    if keys.stress_key is not None:
        stress = _read_label(*where, keys.stress_key, "stress", per_atom=False, required=keys.require_stress)
        if stress is not None:
            if stress.shape == (6,):  # ASE Voigt order xx, yy, zz, yz, xz, xy
                stress = voigt_6_to_full_3x3_stress(stress)
            elif stress.size == 9:
                stress = stress.reshape(3, 3)
            else:
                raise DataFormatError(
                    f"{_where(source, frame)}: stress {keys.stress_key!r} has shape {stress.shape}, "
                    "expected (6,) or (3, 3)"
                )
            record.stress = torch.from_numpy(np.ascontiguousarray(stress))
    return record


def _read_label(
    atoms: Atoms, source: str, frame: int | str, key: str, what: str, *, per_atom: bool, required: bool, hint: str = ""
) -> np.ndarray | None:
    """The label ``key`` of the frame as a float64 array; None if absent and not ``required``.

    Raises:
        DataFormatError: absent and required, naming the file, the frame and the keys present.
    """
    value = _lookup(atoms, key, per_atom=per_atom)
    if value is None:
        if required:
            raise DataFormatError(
                f"{_where(source, frame)}: {what} key {key!r} not found; keys present: {_present_keys(atoms)}{hint}"
            )
        return None
    return np.asarray(value, dtype=np.float64)


def _check_exists(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    return path


def iter_ase_frames(
    path: str | Path, keys: LabelKeys = DEFAULT_KEYS, format: str | None = None
) -> Iterator[tuple[Atoms, Data]]:
    """Stream ``(atoms, frame record)`` for the frames of an ASE-readable file (memory: one frame at a time).

    Every frame is returned or an error is raised that names the file and the frame index; none is
    skipped. ``format`` is passed to :func:`ase.io.iread` (``None``: guessed from the name).
    """
    import ase.io

    path = _check_exists(path)
    frame = 0
    iterator = ase.io.iread(str(path), index=":", format=format)
    while True:
        try:
            atoms = next(iterator)
        except StopIteration:
            return
        except Exception as error:  # ASE raises many types (XYZError, ValueError, IndexError, ...)
            raise DataFormatError(
                f"{path}, frame {frame}: could not be read ({type(error).__name__}: {error})"
            ) from error
        yield atoms, atoms_to_record(atoms, keys, str(path), frame)
        frame += 1


def iter_ase_records(path: str | Path, keys: LabelKeys = DEFAULT_KEYS, format: str | None = None) -> Iterator[Data]:
    """Stream the frame records of an ASE-readable file (see :func:`iter_ase_frames`)."""
    for _, record in iter_ase_frames(path, keys, format):
        yield record


def read_ase_records(path: str | Path, keys: LabelKeys = DEFAULT_KEYS, format: str | None = None) -> list[Data]:
    """All frames of an ASE-readable file as a list of frame records (see :func:`iter_ase_records`)."""
    records = list(iter_ase_records(path, keys, format))
    if not records:
        raise DataFormatError(f"{path}: the file holds no frames")
    return records
