"""``equimol predict``: every input format, input order, values equal to the calculator, 1 and 2 processes;
the output keeps what it read (labels, float64 positions, cell and pbc) and predicts under ``--prefix``.

Structures: molecules (non-periodic, 3 to 8 atoms) and periodic boxes, in an extxyz file, an ASE
database and an LMDB. The model is a tiny random float64 potential (H, C, N, O). Tolerance against
the calculator: 1e-6 in eV, eV/Å and eV/Å³, set by the extended XYZ text (8 decimals for forces,
ASE's default float format for header values); the 2-process file equals the 1-process file to
float64 rounding (other batches, other summation order).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from test_calculator import small_model

from equimol.calculator import EquimolCalculator
from equimol.cli import main
from equimol.export import export_model

TOLERANCE = 1e-6


def _structures() -> list[Atoms]:
    generator = np.random.default_rng(3)
    structures = []
    for name in ("H2O", "CH4", "NH3", "CH3OH", "C2H6"):
        atoms = molecule(name)
        atoms.positions += generator.normal(scale=0.05, size=atoms.positions.shape)
        structures.append(atoms)
    for count in (6, 9):  # periodic boxes of random H/C/N/O atoms, at least 1 Å apart
        box = Atoms(numbers=generator.choice([1, 6, 7, 8], size=count), cell=np.diag([4.5, 5.0, 5.5]), pbc=True)
        box.positions = generator.uniform(0, 4.5, size=(count, 3))
        structures.append(box)
    structures[0].cell = np.diag([9.0, 10.0, 11.0])  # a molecule in a box it is not periodic in: kept as is
    for index, atoms in enumerate(structures):  # labels as a data set would have them; predict keeps them
        atoms.calc = SinglePointCalculator(atoms, energy=-float(index), forces=np.full((len(atoms), 3), 0.25))
    return structures


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    model = small_model([1, 6, 7, 8], energy_scale=5.0)
    export_model(model, folder / "model.pt")
    structures = _structures()
    ase.io.write(folder / "frames.extxyz", structures[:3], format="extxyz")
    with ase.db.connect(folder / "frames.db") as database:
        for atoms in structures[3:5]:
            database.write(atoms)
    assert main(["data", "convert", str(folder / "frames.extxyz"), str(folder / "frames.lmdb"), "--quiet"]) == 0
    ase.io.write(folder / "boxes.extxyz", structures[5:], format="extxyz")
    inputs = [str(folder / name) for name in ("frames.extxyz", "frames.db", "frames.lmdb", "boxes.extxyz")]
    expected = structures[:3] + structures[3:5] + structures[:3] + structures[5:]
    return {"folder": folder, "model": model, "inputs": inputs, "expected": expected}


def _check_against_calculator(path: Path, case: dict, prefix: str = "equimol_") -> None:
    predicted = ase.io.read(path, ":")
    assert [atoms.info["equimol_index"] for atoms in predicted] == list(range(len(case["expected"])))
    calculator = EquimolCalculator(case["model"])
    for atoms, original in zip(predicted, case["expected"], strict=True):
        reference = Atoms(original.numbers, original.positions, cell=original.cell, pbc=original.pbc)
        reference.calc = calculator
        np.testing.assert_array_equal(atoms.numbers, reference.numbers)
        assert abs(atoms.info[f"{prefix}energy"] - reference.get_potential_energy()) < TOLERANCE
        np.testing.assert_allclose(atoms.arrays[f"{prefix}forces"], reference.get_forces(), atol=TOLERANCE, rtol=0)
        if reference.pbc.any():
            np.testing.assert_allclose(atoms.info[f"{prefix}stress"], reference.get_stress(), atol=TOLERANCE, rtol=0)
        else:
            assert f"{prefix}stress" not in atoms.info
        # what was read stays: the labels, the positions (float64, as the extxyz text holds them), cell and pbc
        assert atoms.get_potential_energy() == original.get_potential_energy()
        np.testing.assert_array_equal(atoms.get_forces(), original.get_forces())
        np.testing.assert_allclose(atoms.positions, original.positions, atol=5e-9, rtol=0)
        np.testing.assert_allclose(atoms.cell[:], original.cell[:], atol=5e-9, rtol=0)
        np.testing.assert_array_equal(atoms.pbc, original.pbc)
    assert predicted[-1].arrays[f"{prefix}forces"].std() > 0.01  # real forces, not the labels of the inputs


def test_one_process_predicts_every_format_in_order(case, capsys):
    out = case["folder"] / "one.extxyz"
    previous = torch.get_num_threads()
    try:
        assert main(["predict", str(case["folder"] / "model.pt"), *case["inputs"], "--out", str(out), "--quiet"]) == 0
    finally:
        torch.set_num_threads(previous)
    assert f"wrote {len(case['expected'])} predictions" in capsys.readouterr().out
    _check_against_calculator(out, case)
    assert not list(case["folder"].glob(".one.extxyz*"))  # part files removed


def test_two_processes_write_the_same_file(case):
    one, two = case["folder"] / "one_again.extxyz", case["folder"] / "two.extxyz"
    assert main(["predict", str(case["folder"] / "model.pt"), *case["inputs"], "--out", str(one), "--quiet"]) == 0
    command = [str(Path(sys.executable).with_name("equimol")), "predict", str(case["folder"] / "model.pt")]
    command += [*case["inputs"], "--out", str(two), "--num-processes", "2", "--batch-size", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr
    frames_one, frames_two = ase.io.read(one, ":"), ase.io.read(two, ":")
    assert [a.info["equimol_source"] for a in frames_two] == [a.info["equimol_source"] for a in frames_one]
    for first, second in zip(frames_one, frames_two, strict=True):
        # other batches sum in another order: equal up to float64 rounding and the file's 8 decimals
        assert abs(first.info["equimol_energy"] - second.info["equimol_energy"]) < 1e-10
        np.testing.assert_allclose(first.arrays["equimol_forces"], second.arrays["equimol_forces"], atol=1.1e-8, rtol=0)
        np.testing.assert_array_equal(first.positions, second.positions)
    _check_against_calculator(two, case)


@pytest.mark.parametrize(
    ("make_input", "out_name", "message"),
    [
        (lambda folder: folder / "missing.extxyz", "out.extxyz", "missing.extxyz' does not exist"),
        (lambda folder: _write(folder / "broken.extxyz", "3\nnot a header\nH 0 0\n"), "out.extxyz", "broken.extxyz"),
        (lambda folder: folder / "frames.extxyz", "out.csv", "extended XYZ"),
        (
            lambda folder: _write_atoms(folder / "gold.extxyz", Atoms("Au2", positions=[[0, 0, 0], [2.5, 0, 0]])),
            "out.extxyz",
            "gold.extxyz:0: element(s) ['Au'] are not among the model's species",
        ),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(case, capsys, make_input, out_name, message):
    path = make_input(case["folder"])
    out = case["folder"] / out_name
    code = main(["predict", str(case["folder"] / "model.pt"), str(path), "--out", str(out), "--quiet"])
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert error.startswith("equimol predict: error: ") and message in error and "\n" not in error
    assert not out.exists()


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _write_atoms(path: Path, atoms: Atoms) -> Path:
    ase.io.write(path, atoms, format="extxyz")
    return path


def test_a_float32_model_keeps_the_positions_as_read_and_takes_a_prefix(case, tmp_path):
    # the positions come from the input, not from the model's float32 graph; the extxyz input is reproduced
    source = case["folder"] / "frames.extxyz"
    out = tmp_path / "mace_style.extxyz"
    arguments = ["predict", str(case["folder"] / "model.pt"), str(source), "--out", str(out), "--quiet"]
    assert main(arguments + ["--dtype", "float32", "--prefix", "MACE_"]) == 0
    columns = [
        line.split()[1:4] for line in out.read_text().splitlines() if line[:1] in "HCNO" and len(line.split()) > 4
    ]
    expected = [
        line.split()[1:4] for line in source.read_text().splitlines() if line[:1] in "HCNO" and len(line.split()) > 4
    ]
    assert columns == expected
    frames = ase.io.read(out, ":")
    assert all("MACE_energy" in atoms.info and "MACE_forces" in atoms.arrays for atoms in frames)
    assert not any("equimol_energy" in atoms.info for atoms in frames)


@pytest.mark.parametrize("prefix", ["", "a-b", "x y"])
def test_a_bad_prefix_is_refused(case, capsys, prefix):
    out = case["folder"] / "never.extxyz"
    with pytest.raises(SystemExit) as exit_status:  # an argument error: argparse exits
        main(["predict", str(case["folder"] / "model.pt"), case["inputs"][0], "--out", str(out), "--prefix", prefix])
    assert exit_status.value.code == 2 and "--prefix" in capsys.readouterr().err and not out.exists()
