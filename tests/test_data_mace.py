"""MACE-style training files train as they are: REF_ keys, IsolatedAtom frames, config_type weights, Huber loss.

The file: 16 real 3BPA frames (train_300K) with their labels under ``REF_energy`` / ``REF_forces`` in
``info`` / ``arrays`` (not in a calculator), half of them ``config_type=MD`` and half ``Default``, and
the four isolated atoms of ``iso_atoms.xyz`` as ``config_type=IsolatedAtom`` frames with an energy and no
forces, placed between them as MACE users do.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from equimol.datasets.datamodule import AtomsDataModule
from equimol.datasets.readers import DataFormatError
from equimol.train.config import ConfigError, validate_config
from equimol.train.run import train
from harness import tiny_model_section

from equimol.export import load_model

ISOLATED = {6: -1029.4889999855063, 1: -13.587222780835477, 7: -1484.9814568572233, 8: -2041.9816003861047}


def write_mace_file(shared_data: Path, folder: Path, frames: int = 16, forces_on_isolated: bool = False) -> Path:
    molecules = ase.io.read(shared_data / "3bpa" / "train_300K.xyz", f":{frames}")
    isolated = ase.io.read(shared_data / "3bpa" / "iso_atoms.xyz", ":")
    out = []
    for index, atoms in enumerate(molecules):
        plain = atoms.copy()  # no calculator: the labels live under MACE's REF_ keys
        plain.info = {"REF_energy": atoms.get_potential_energy(), "config_type": "MD" if index % 2 else "Default"}
        plain.arrays["REF_forces"] = atoms.get_forces()
        out.append(plain)
        if index % 5 == 0 and isolated:
            atom = isolated.pop()
            single = atom.copy()
            single.info = {"REF_energy": atom.get_potential_energy(), "config_type": "IsolatedAtom"}
            if forces_on_isolated:
                single.arrays["REF_forces"] = np.zeros((1, 3))
            out.append(single)
    out += [_isolated(atom) for atom in isolated]
    path = folder / "mace_train.xyz"
    ase.io.write(path, out, format="extxyz")
    return path


def _isolated(atom):
    single = atom.copy()
    single.info = {"REF_energy": atom.get_potential_energy(), "config_type": "IsolatedAtom"}
    return single


def _data(path: Path, **changes) -> dict:
    return {
        "train": str(path),
        "energy_key": "REF_energy",
        "forces_key": "REF_forces",
        "val_fraction": 0.25,
        "batch_size": 4,
        "config_type_weights": {"Default": 1.0, "MD": 3.0},
        **changes,
    }


def test_isolated_atoms_become_the_e0s_and_are_not_trained_on(shared_data: Path, tmp_path: Path) -> None:
    path = write_mace_file(shared_data, tmp_path)
    data = AtomsDataModule(**_data(path))
    data.setup()
    assert data.element_references.as_dict() == ISOLATED
    train, val = data.datasets["train"], data.indices
    assert len(val["train"]) + len(val["val"]) == 16
    for split in ("train", "val"):
        assert all(train.record(int(i)).natoms == 27 for i in val[split])
    weights = {int(graph.fid): float(graph.weight) for graph in (train[int(i)] for i in val["train"])}
    types = {int(train.record(int(i)).fid): train.record(int(i)).config_type for i in val["train"]}
    assert {types[f]: w for f, w in weights.items()} == {"MD": 3.0, "Default": 1.0}


def test_a_mace_style_file_trains_with_no_conversion(shared_data: Path, tmp_path: Path) -> None:
    path = write_mace_file(shared_data, tmp_path)
    config = validate_config(
        {
            "model": tiny_model_section(["H", "C", "N", "O"]),
            "data": _data(path),
            "loss": {"kind": "huber", "huber_delta": 0.01, "forces_weight": 10.0},
            "trainer": {"run_dir": str(tmp_path / "run"), "max_steps": 3, "progress_bar": False},
        }
    )
    result = train(config)
    model = load_model(result["model"])
    e0s = dict(zip(model.species, model.readout.e0s.tolist()))
    assert e0s == pytest.approx(ISOLATED, abs=1e-9)


def test_isolated_atoms_and_element_references_together_are_refused(shared_data: Path, tmp_path: Path) -> None:
    path = write_mace_file(shared_data, tmp_path)
    references = {str(z): energy for z, energy in ISOLATED.items()}
    with pytest.raises(ValueError, match=r"data.element_references=.*isolated-atom frames .*config_type=IsolatedAtom"):
        AtomsDataModule(**_data(path, element_references=references)).setup()
    data = AtomsDataModule(**_data(path, element_references=references, isolated_atom_type=None, forces_key=None))
    data.setup()  # opted out: the isolated atoms are ordinary (energy-only) frames
    assert len(data.indices["train"]) + len(data.indices["val"]) == 20


def test_a_frame_without_forces_names_the_isolated_atom_type_and_the_config_key(tmp_path: Path) -> None:
    atoms = ase.Atoms("CO", positions=[[0, 0, 0], [1.2, 0, 0]])
    atoms.info = {"REF_energy": -5.0, "config_type": "IsolatedAtom"}  # two atoms: not an isolated atom
    path = tmp_path / "no_forces.xyz"
    ase.io.write(path, [atoms], format="extxyz")
    with pytest.raises(DataFormatError) as error:
        AtomsDataModule(**_data(path, val_fraction=0.0)).setup()
    message = str(error.value)
    assert "config_type=IsolatedAtom" in message and "data.forces_key=null" in message
    assert "forces_key=None" not in message


@pytest.mark.parametrize(
    "loss,message",
    [
        ({"kind": "l1"}, "loss.kind must be one of"),
        ({"huber_delta": 0.0}, "loss.huber_delta must be > 0"),
        ({"stage_two": {"start": 1.5}}, r"loss.stage_two.start must be > 0 and < 1"),
        ({"stage_two": {"lr": -1.0}}, "loss.stage_two.lr must be > 0"),
        ({"stage_two": {"energy_weights": 1.0}}, r"unknown key\(s\) loss.stage_two.energy_weights"),
    ],
)
def test_bad_loss_keys_name_the_key(shared_data: Path, tmp_path: Path, loss, message) -> None:
    raw = {"model": tiny_model_section(["H"]), "data": _data(write_mace_file(shared_data, tmp_path, 2)), "loss": loss}
    with pytest.raises(ConfigError, match=message):
        validate_config(raw)


def test_config_type_weights_must_be_non_negative_numbers(shared_data: Path, tmp_path: Path) -> None:
    path = write_mace_file(shared_data, tmp_path, 2)
    with pytest.raises(ValueError, match=r"data\.config_type_weights must be >= 0"):
        AtomsDataModule(**_data(path, config_type_weights={"MD": -1.0}))


def test_weights_scale_each_structures_terms_and_huber_is_torchs() -> None:
    from equimol.train.config import LossConfig
    from equimol.train.losses import weighted_loss
    from torch_geometric.data import Batch, Data

    graphs = []
    for weight in (1.0, 3.0):
        graphs.append(
            Data(
                pos=torch.zeros(2, 3, dtype=torch.float64),
                cell=torch.zeros(1, 3, 3, dtype=torch.float64),
                forces=torch.zeros(2, 3, dtype=torch.float64),
                force_mask=torch.ones(2, dtype=torch.bool),
                weight=torch.tensor([weight], dtype=torch.float64),
            )
        )
    batch = Batch.from_data_list(graphs)
    forces = torch.tensor([[0.005, 0, 0], [0, 0, 0], [0.5, 0, 0], [0, 0, 0]], dtype=torch.float64)
    prediction = {"energy": torch.tensor([0.02, -0.2], dtype=torch.float64), "forces": forces}
    target = torch.zeros(2, dtype=torch.float64)
    _, mse = weighted_loss(prediction, batch, target, LossConfig())
    assert float(mse["energy"]) == pytest.approx((1.0 * 0.01**2 + 3.0 * 0.1**2) / 2)
    assert float(mse["forces"]) == pytest.approx((1.0 * 0.005**2 + 3.0 * 0.5**2) / 12)
    _, huber = weighted_loss(prediction, batch, target, LossConfig(kind="huber", huber_delta=0.01))
    # per-atom energy errors 0.01 (quadratic branch) and 0.1 (linear branch: delta (|x| - delta / 2))
    assert float(huber["energy"]) == pytest.approx((1.0 * 0.5 * 0.01**2 + 3.0 * 0.01 * (0.1 - 0.005)) / 2)
    assert float(huber["forces"]) == pytest.approx((1.0 * 0.5 * 0.005**2 + 3.0 * 0.01 * (0.5 - 0.005)) / 12)
