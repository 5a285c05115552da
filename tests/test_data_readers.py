"""Readers of ASE-readable files: 3BPA counts and labels against the files' text, keys, and bad input.

Labels are compared for exact equality (no tolerance): the reader must return the float64 value
of each number written in the file, nothing recomputed.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from equimol.datasets.readers import DataFormatError, LabelKeys, read_ase_records
from equimol.datasets.references import ElementReferences

THREE_BPA_COUNTS = {"train_300K.xyz": 500, "train_mixedT.xyz": 500, "test_300K.xyz": 1669, "test_600K.xyz": 2138}


def parse_extxyz_text(path: Path) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Independent parser of 3BPA's layout (species, pos:R:3, forces:R:3; energy=<float> in the header)."""
    frames = []
    lines = path.read_text().splitlines()
    line = 0
    while line < len(lines):
        count = int(lines[line])
        header = lines[line + 1]
        energy = float(header.split("energy=")[1].split()[0])
        rows = [row.split() for row in lines[line + 2 : line + 2 + count]]
        positions = np.array([[float(v) for v in row[1:4]] for row in rows])
        forces = np.array([[float(v) for v in row[4:7]] for row in rows])
        frames.append((energy, positions, forces))
        line += 2 + count
    return frames


@pytest.mark.parametrize("name", ["train_300K.xyz", "test_300K.xyz", "test_600K.xyz"])
def test_3bpa_counts_and_labels_equal_the_files(shared_data: Path, name: str) -> None:
    path = shared_data / "3bpa" / name
    records = read_ase_records(path)
    assert len(records) == THREE_BPA_COUNTS[name]
    expected = parse_extxyz_text(path)
    assert len(expected) == len(records)
    for record, (energy, positions, forces) in zip(records, expected):
        assert record.energy == energy
        np.testing.assert_array_equal(record.pos.numpy(), positions)
        np.testing.assert_array_equal(record.forces.numpy(), forces)
        assert record.natoms == 27
        assert not bool(record.pbc.any())


def test_3bpa_isolated_atom_e0s(shared_data: Path) -> None:
    references = ElementReferences.from_isolated_atoms(shared_data / "3bpa" / "iso_atoms.xyz")
    # The values printed in shared/data/README.md (full float repr of the file's numbers).
    assert references.as_dict() == {
        1: -13.587222780835477,
        6: -1029.4889999855063,
        7: -1484.9814568572233,
        8: -2041.9816003861047,
    }
    numbers = np.array([6] * 12 + [1] * 12 + [7] * 2 + [8])
    assert references.energy(numbers) == pytest.approx(
        12 * -1029.4889999855063 + 12 * -13.587222780835477 + 2 * -1484.9814568572233 - 2041.9816003861047,
        abs=1e-9,  # summation order only: |E| ~ 2e4 eV, float64 eps 2e-16 -> rounding ~ 1e-11 eV
    )
    with pytest.raises(DataFormatError, match=r"no reference energy for element\(s\) \['Cu'\]"):
        references.energy(np.array([1, 29]), where="test")


def _frame(energy_in: str, forces_in: str) -> Atoms:
    atoms = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    energy, forces = -14.2, np.arange(9.0).reshape(3, 3)
    if energy_in == "calc" or forces_in == "calc":
        results = {}
        if energy_in == "calc":
            results["energy"] = energy
        if forces_in == "calc":
            results["forces"] = forces
        atoms.calc = SinglePointCalculator(atoms, **results)
    if energy_in == "info":
        atoms.info["REF_energy"] = energy
    if forces_in == "arrays":
        atoms.arrays["REF_forces"] = forces
    return atoms


def test_labels_read_through_calc_and_through_info_arrays(tmp_path: Path) -> None:
    path = tmp_path / "keys.xyz"
    ase.io.write(path, [_frame("calc", "calc")], format="extxyz")
    (record,) = read_ase_records(path)
    assert record.energy == -14.2
    np.testing.assert_array_equal(record.forces.numpy(), np.arange(9.0).reshape(3, 3))

    path = tmp_path / "ref_keys.xyz"
    ase.io.write(path, [_frame("info", "arrays")], format="extxyz")
    keys = LabelKeys(energy_key="REF_energy", forces_key="REF_forces")
    (record,) = read_ase_records(path, keys)
    assert record.energy == -14.2
    np.testing.assert_array_equal(record.forces.numpy(), np.arange(9.0).reshape(3, 3))


def test_stress_voigt_to_full_with_ase_sign(tmp_path: Path) -> None:
    atoms = Atoms("Cu", cell=np.eye(3) * 3.6, pbc=True)
    voigt = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) * 1e-3  # xx yy zz yz xz xy, eV/Å³
    atoms.calc = SinglePointCalculator(atoms, energy=-3.0, forces=np.zeros((1, 3)), stress=voigt)
    path = tmp_path / "stress.xyz"
    ase.io.write(path, atoms, format="extxyz")
    (record,) = read_ase_records(path)
    expected = np.array([[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]]) * 1e-3
    np.testing.assert_array_equal(record.stress.numpy(), expected)


def test_traj_and_ase_db_and_json(shared_data: Path) -> None:
    (adslab,) = read_ase_records(shared_data / "oc20" / "oc20_single_adslab_atoms.json")
    assert adslab.natoms == 34 and adslab.energy == -135.66393572
    assert int(adslab.fixed.sum()) == 24
    assert set(adslab.tags.tolist()) == {0, 1}
    oxides = read_ase_records(shared_data / "extra" / "kitchin_BO2_oxide_polymorphs.db")
    assert len(oxides) == 295
    traj = read_ase_records(shared_data / "oc20" / "dft_relaxation_trajs_2020" / "random1000156.traj")
    assert len(traj) == 36 and traj[0].sid == "random1000156" and traj[5].fid == 5


# ---------------------------------------------------------------------------------------------- bad input


def test_truncated_extxyz_names_file_and_frame(tmp_path: Path, shared_data: Path) -> None:
    lines = (shared_data / "3bpa" / "train_300K.xyz").read_text().splitlines(keepends=True)
    path = tmp_path / "truncated.xyz"
    path.write_text("".join(lines[: 2 * 29 + 10]))  # two whole frames, then 8 of 27 atom lines
    with pytest.raises(DataFormatError, match=r"truncated\.xyz, frame 2: could not be read"):
        read_ase_records(path)


def test_missing_energy_key_lists_present_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.xyz"
    ase.io.write(path, [_frame("calc", "calc")], format="extxyz")
    with pytest.raises(DataFormatError, match=r"keys\.xyz, frame 0: energy key 'REF_energy' not found; keys present: "):
        read_ase_records(path, LabelKeys(energy_key="REF_energy"))
    try:
        read_ase_records(path, LabelKeys(energy_key="REF_energy"))
    except DataFormatError as error:
        assert "'energy'" in str(error) and "'forces'" in str(error)


def test_missing_forces_is_an_error_not_a_silent_skip(tmp_path: Path) -> None:
    path = tmp_path / "no_forces.xyz"
    ase.io.write(path, [_frame("calc", "none")], format="extxyz")
    with pytest.raises(DataFormatError, match=r"no_forces\.xyz, frame 0: forces key 'forces' not found"):
        read_ase_records(path)
    (record,) = read_ase_records(path, LabelKeys(forces_key=None))
    assert "forces" not in record


def test_nan_coordinate_names_frame_and_atom(tmp_path: Path) -> None:
    path = tmp_path / "nan.xyz"
    header = 'Properties=species:S:1:pos:R:3:forces:R:3 energy={} pbc="F F F"\n'
    path.write_text(
        "1\n" + header.format(1.0) + "H 0 0 0 0 0 0\n" + "2\n" + header.format(2.0) + "H 0 0 0 0 0 0\nH nan 0 0 0 0 0\n"
    )
    with pytest.raises(DataFormatError, match=r"nan\.xyz, frame 1: non-finite \(NaN/inf\) coordinates on atoms \[1\]"):
        read_ase_records(path)


def test_zero_atom_frame(tmp_path: Path) -> None:
    path = tmp_path / "empty_frame.xyz"
    header = 'Properties=species:S:1:pos:R:3:forces:R:3 energy=1.0 pbc="F F F"\n'
    path.write_text("1\n" + header + "H 0 0 0 0 0 0\n0\n" + header)
    with pytest.raises(DataFormatError, match=r"empty_frame\.xyz, frame 1: the frame has zero atoms"):
        read_ase_records(path)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"does_not_exist\.xyz' does not exist"):
        read_ase_records(tmp_path / "does_not_exist.xyz")
