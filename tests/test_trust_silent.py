"""Silently wrong results of issue 31 that are now errors or right answers: a LAMMPS fix that skips steps, the stress
of slabs in ``equimol predict``, stress labels on some structures only, a weight changed after export.
"""

from __future__ import annotations

import re
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import fcc111
from ase.calculators.singlepoint import SinglePointCalculator
from lammps_case import ELEMENTS, cu_au_box, open_lammps, tiny_model
from test_lammps import one_thread  # noqa: F401 - autouse: one torch thread, as the LAMMPS tests

from equimol.calculator import EquimolCalculator
from equimol.cli import main
from equimol.export import ModelFileError, export_model, load_model

ROOT = Path(__file__).resolve().parents[1]


def test_run_input_refuses_a_callback_that_skips_steps(tmp_path) -> None:
    from equimol.lammps import LammpsCouplingError, load_lammps
    from equimol.lammps_input import run_input

    script = (ROOT / "examples" / "lammps" / "in.npt.lmp").read_text().replace("pf/callback 1 1", "pf/callback 10 1")
    (tmp_path / "in.lmp").write_text(re.sub(r"^run\s+\d+", "run 20", script, flags=re.M))
    (tmp_path / "cu_au.data").write_text((ROOT / "examples" / "lammps" / "cu_au.data").read_text())
    lmp = load_lammps()(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    with pytest.raises(LammpsCouplingError, match=r"in.lmp, line 13: .*pf/callback 10 1.*every step"):
        run_input(lmp, tmp_path / "in.lmp", tiny_model(), ELEMENTS)
    assert lmp.get_thermo("step") == 0  # refused before anything ran
    lmp.close()


def test_a_fix_that_skips_steps_stops_the_run_at_its_first_late_callback() -> None:
    """EquimolFix cannot read the fix's N; the step after a gap of N is the pattern, and the run halts there."""
    from equimol.lammps import EquimolFix

    lmp = open_lammps(cu_au_box(), integrate=False)
    lmp.commands_string("unfix equimol\nfix equimol all external pf/callback 4 1\nfix integrate all nve")
    coupling = EquimolFix(lmp, tiny_model(), ELEMENTS)
    with pytest.raises(Exception, match="halt"):
        lmp.command("run 20")
    assert lmp.get_thermo("step") == 4  # the first late callback, not step 20
    with pytest.raises(ValueError, match="stale forces.*pf/callback 1 1"):
        coupling.raise_if_failed()
    lmp.close()
    every_step = open_lammps(cu_au_box())
    coupling = EquimolFix(every_step, tiny_model(), ELEMENTS)
    every_step.command("run 3")
    every_step.command("run 2")  # a second run's setup repeats its first step: not a gap
    coupling.raise_if_failed()
    assert coupling.evaluations == 7
    every_step.close()


def test_predict_gives_slabs_energy_and_forces_and_says_their_stress_is_skipped(tmp_path, capsys) -> None:
    model = tiny_model()
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    slab.numbers[::3] = 79
    slab.pbc = [True, True, False]
    flat = slab.copy()
    flat.cell[2] = 0.0  # a slab with no third vector: no volume
    bulk = cu_au_box(temperature_k=0.0)
    ase.io.write(tmp_path / "in.xyz", [slab, flat, bulk], format="extxyz")
    path = export_model(model, tmp_path / "model.pt")
    assert main(["predict", str(path), str(tmp_path / "in.xyz"), "--out", str(tmp_path / "o.xyz"), "--quiet"]) == 0
    assert "stress skipped for 2 frame(s)" in capsys.readouterr().out
    predicted = ase.io.read(tmp_path / "o.xyz", ":")
    calculator = EquimolCalculator(model)
    for atoms, reference in zip(predicted, [slab, flat, bulk], strict=True):
        reference = reference.copy()
        reference.calc = calculator
        assert abs(atoms.info["equimol_energy"] - reference.get_potential_energy()) < 1e-6
        np.testing.assert_allclose(atoms.arrays["equimol_forces"], reference.get_forces(), atol=1e-6)
    assert "equimol_stress" not in predicted[0].info and "equimol_stress" not in predicted[1].info
    np.testing.assert_allclose(predicted[2].info["equimol_stress"], calculator.get_stress(bulk.copy()), atol=1e-6)


def test_stress_labels_on_some_structures_only_are_refused_naming_them(tmp_path) -> None:
    from equimol.datasets.atoms_dataset import AtomsDataset, LabelSettings
    from equimol.datasets.loader import GraphLoader
    from equimol.datasets.readers import DataFormatError

    structures = []
    for index in range(4):
        atoms = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=np.eye(3) * 6, pbc=True)
        labels = {"energy": -1.0, "forces": np.zeros((2, 3))}
        if index == 2:
            labels["stress"] = np.zeros(6)
        atoms.calc = SinglePointCalculator(atoms, **labels)
        structures.append(atoms)
    ase.io.write(tmp_path / "ps.xyz", structures, format="extxyz")
    dataset = AtomsDataset([tmp_path / "ps.xyz"], LabelSettings(radial_cutoff=3.0))
    for order in ([0, 2], [2, 0]):  # PyG fails on the first order and silently drops stress on the second
        with pytest.raises(DataFormatError, match=r"frame 0 has no stress label but structure 'ps', frame 2 has"):
            next(iter(GraphLoader(torch.utils.data.Subset(dataset, order), batch_size=2)))
    assert "stress" not in next(iter(GraphLoader(torch.utils.data.Subset(dataset, [0, 1]), batch_size=2)))


def test_a_weight_changed_after_export_is_refused(tmp_path) -> None:
    path = export_model(tiny_model(), tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = payload["state_dict"][name].clone()
    payload["state_dict"][name].view(-1)[0] *= 2.0**64  # an exponent bit: energies off by orders of magnitude
    torch.save(payload, path)  # saved again, so the zip's CRCs match the changed bytes
    with pytest.raises(ModelFileError, match="weights_sha256"):
        load_model(path)
