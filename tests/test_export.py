"""Model files: round trip without the training config, format-version and wrong-file errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from equimol import __version__
from equimol.export import FORMAT_VERSION, ModelFileError, export_model, load_model, read_model_file
from equimol.graph import structure_to_graph
from equimol.models import build_model


@pytest.fixture(scope="module")
def model():
    return build_model(
        {
            "species": ["H", "O"],
            "channels": 4,
            "lmax": 1,
            "num_layers": 1,
            "radial_mlp_hidden": [8],
            "readout_hidden": 4,
            "avg_num_neighbors": 3.0,
            "e0s": {"H": -13.6, "O": -2041.9},
            "spe": {"enabled": True},
            "tp_backend": "cg",
            "seed": 7,
        }
    ).eval()


def water_graph(dtype=torch.float64):
    positions = [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0], [2.5, 0.3, 0.2]]
    return structure_to_graph(positions, [8, 1, 1, 1], torch.zeros(3, 3).numpy(), [False] * 3, 5.0, dtype)


def test_round_trip_gives_identical_outputs(model, tmp_path: Path) -> None:
    path = export_model(model, tmp_path / "model.pt", metadata={"note": "test"})
    payload = read_model_file(path)
    assert payload["format_version"] == FORMAT_VERSION and payload["equimol_version"] == __version__
    assert payload["species"] == [1, 8] and payload["radial_cutoff"] == 5.0 and payload["dtype"] == "float64"
    assert payload["metadata"] == {"note": "test"}
    loaded = load_model(path)
    assert not loaded.training
    expected, actual = model(water_graph()), loaded(water_graph())
    for key in ("energy", "forces", "node_energy"):
        assert torch.equal(expected[key], actual[key]), key


def test_dtype_on_load(model, tmp_path: Path) -> None:
    path = export_model(model, tmp_path / "model.pt")
    single = load_model(path, dtype="float32")
    assert single.dtype == torch.float32
    # float32 rounding of a ~2082 eV total energy: ~1e-4 eV
    assert float(single(water_graph(torch.float32))["energy"]) == pytest.approx(
        float(model(water_graph())["energy"]), abs=1e-3
    )


def test_newer_format_version_fails_clearly(model, tmp_path: Path) -> None:
    path = export_model(model, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    payload["equimol_version"] = "9.0.0"
    torch.save(payload, path)
    with pytest.raises(
        ModelFileError, match=rf"format version {FORMAT_VERSION + 1} written by equimol 9.0.0.*Upgrade equimol"
    ):
        load_model(path)


def test_not_a_model_file(tmp_path: Path) -> None:
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ModelFileError, match="not an equimol model file"):
        load_model(tmp_path / "text.pt")
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6"}, tmp_path / "last.ckpt")
    with pytest.raises(ModelFileError, match="equimol export"):
        load_model(tmp_path / "last.ckpt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_damaged_weights_fail_clearly(model, tmp_path: Path) -> None:
    path = export_model(model, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop(next(iter(payload["state_dict"])))
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="weights_sha256"):
        load_model(path)
    payload.pop("weights_sha256")  # as written before model files carried a checksum
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="cannot be rebuilt"):
        load_model(path)


def test_export_needs_a_potential(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="Potential"):
        export_model(torch.nn.Linear(2, 2), tmp_path / "x.pt")
