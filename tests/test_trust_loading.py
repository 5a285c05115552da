"""Opening a file never runs its code: a crafted file for every entry point, each carrying a payload that would
create a marker file when unpickled, evaluated or executed. Each test asserts that the command refuses the file
in one line naming it, and that the marker does not exist.

The payload is checked to work (:func:`test_the_payload_runs_when_trusted`): plain ``pickle.loads``,
``torch.load(weights_only=False)`` and torch's own ``.pt2`` reader each create the marker.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from fractions import Fraction
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from test_train_e2e import tiny_config, write_tiny_frames
from torch_geometric.data import Data

from equimol.cli import main
from equimol.export import export_model, load_model
from equimol.models import build_model
from equimol.safe_archive import UnsafeArchiveError
from equimol.safe_pickle import UnsafeFileError


class Payload:
    """Unpickling it calls ``open(marker, "w")``: the marker exists if and only if the payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def tiny_potential(species=(29, 79)):
    config = {"species": list(species), "channels": 4, "lmax": 1, "num_layers": 1, "num_radial_basis": 4}
    return build_model({**config, "radial_cutoff": 4.0, "radial_mlp_hidden": [8], "avg_num_neighbors": 8.0})


# ------------------------------------------------------------------------------------------- crafted files
def evil_checkpoint(folder: Path, marker: Path, name: str = "evil.ckpt") -> Path:
    torch.save({"state_dict": {}, "model_config": {}, "epoch": 0, "payload": Payload(marker)}, folder / name)
    return folder / name


def evil_model_file(folder: Path, marker: Path) -> Path:
    payload = {"format": "equimol-model", "format_version": 2, "model_config": {}, "state_dict": {}}
    torch.save({**payload, "metadata": {"note": Payload(marker)}}, folder / "evil_model.pt")
    return folder / "evil_model.pt"


def evil_lmdb(folder: Path, marker: Path, name: str = "evil.lmdb") -> Path:
    """A fairchem-layout LMDB whose second frame carries the payload in one of its fields."""
    env = lmdb.open(str(folder / name), subdir=False, map_size=1 << 24)
    with env.begin(write=True) as txn:
        for index in range(2):
            frame = Data(
                pos=torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 2.2]]),
                cell=torch.eye(3).unsqueeze(0) * 8.0,
                atomic_numbers=torch.tensor([29, 29]),
                natoms=2,
                energy=-1.0,
                forces=torch.zeros(2, 3),
            )
            if index == 1:
                frame.note = Payload(marker)
            txn.put(str(index).encode(), pickle.dumps(frame))
        txn.put(b"length", pickle.dumps(2))
    env.close()
    return folder / name


def rewrite_archive(source: Path, target: Path, replace: dict, add: dict | None = None) -> Path:
    """Copy the zip ``source`` to ``target`` with entries (names relative to its root) replaced or added."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        root = archive.namelist()[0].split("/", 1)[0]
        for info in archive.infolist():
            relative = info.filename[len(root) + 1 :]
            data = archive.read(info)
            out.writestr(info.filename, replace[relative](data) if relative in replace else data)
        for relative, data in (add or {}).items():
            out.writestr(f"{root}/{relative}", data)
    return target


def _json_edit(edit):
    def apply(data: bytes) -> bytes:
        value = json.loads(data)
        edit(value)
        return json.dumps(value).encode()

    return apply


def _saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def pickled_weight(source: Path, target: Path, marker: Path) -> Path:
    """The issue's attack: one weight switched to ``use_pickle: true``, a malicious pickle in its place."""

    def flag(config):
        entry = next(iter(config["config"].values()))
        entry["use_pickle"] = True
        flag.path = entry["path_name"]

    weights = "data/weights/model_weights_config.json"
    edited = _json_edit(flag)(zipfile.ZipFile(source).read(_entry(source, weights)))
    return rewrite_archive(
        source, target, {weights: lambda _: edited, f"data/weights/{flag.path}": lambda _: _saved(Payload(marker))}
    )


def _entry(path: Path, relative: str) -> str:
    names = zipfile.ZipFile(path).namelist()
    return next(name for name in names if name.endswith(f"/{relative}"))


def guard_code(source: Path, target: Path, marker: Path) -> Path:
    """A guard string, which torch's reader would ``exec``, that opens the marker."""
    code = f"open({str(marker)!r}, 'w').close() is None"
    return rewrite_archive(source, target, {"models/model.json": _json_edit(lambda p: p["guards_code"].append(code))})


def sympy_expression(source: Path, target: Path, marker: Path) -> Path:
    """A symbolic size, which torch's reader would ``sympy.sympify`` (Python eval), that opens the marker."""

    def edit(program):
        values = program["graph_module"]["graph"]["sym_int_values"]
        first = next(iter(values.values()))
        first["as_expr"]["expr_str"] = f"__import__('builtins').open({str(marker)!r}, 'w').close() or 1"

    return rewrite_archive(source, target, {"models/model.json": _json_edit(edit)})


def sample_inputs(source: Path, target: Path, marker: Path) -> Path:
    """Sample inputs that torch reads with ``weights_only=False`` when the weights-only reader refuses them."""
    return rewrite_archive(source, target, {"data/sample_inputs/model.pt": lambda _: _saved(Payload(marker))})


def os_target(source: Path, target: Path, marker: Path) -> Path:
    """A node whose target resolves, by torch's attribute walk, to ``os.system``."""

    def edit(program):
        program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.serialization.os.system"

    return rewrite_archive(source, target, {"models/model.json": _json_edit(edit)})


ATTACKS = {
    "pickled_weight": pickled_weight,
    "guard_code": guard_code,
    "sympy_expression": sympy_expression,
    "sample_inputs": sample_inputs,
    "os_target": os_target,
}
RUNS_WHEN_TRUSTED = ("pickled_weight", "guard_code", "sympy_expression", "sample_inputs")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    """A real ``equimol export --format export`` file of a tiny Cu/Au model."""
    from equimol.pt2_model import compile_model

    return compile_model(tiny_potential(), tmp_path_factory.mktemp("compiled") / "model.pt2", mode="export")


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    yield tmp_path / "MARKER"
    assert not (tmp_path / "MARKER").exists(), "the payload ran"


def refused_in_one_line(capsys, code: int, *words: str) -> None:
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error and "Traceback" not in error, error
    for word in words:
        assert word in error, (word, error)


# ------------------------------------------------------------------------------------- the payload is real
def test_the_payload_runs_when_trusted(compiled, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()
    marker.unlink()
    torch.load(evil_checkpoint(tmp_path, marker), weights_only=False)
    assert marker.exists()
    for name in RUNS_WHEN_TRUSTED:  # torch's own reader, without equimol's check, runs every one of them
        marker.unlink(missing_ok=True)
        crafted = ATTACKS[name](compiled, tmp_path / f"{name}.pt2", marker)
        try:
            program = torch.export.load(crafted)
            program.module()(*program.example_inputs[0])  # guards run at the first call
        except Exception:  # noqa: BLE001 - the payload has run by the time the damaged program fails
            pass
        assert marker.exists(), name


# ----------------------------------------------------------------------------------------- compiled files
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_crafted_compiled_file_is_refused_before_torch_opens_it(attack, compiled, tmp_path, marker) -> None:
    crafted = ATTACKS[attack](compiled, tmp_path / "evil.pt2", marker)
    with pytest.raises(UnsafeArchiveError, match="evil.pt2"):
        load_model(crafted)


@pytest.mark.parametrize(
    ("name", "replace", "add", "message"),
    [
        ("extra_entry", {}, {"extra/evil.py": b"print()"}, "unexpected entry"),
        ("escaping_path", {}, {"data/weights/../../../evil": b"x"}, "unexpected entry"),
        ("no_mode", {"equimol/metadata.json": _json_edit(lambda m: m.pop("mode"))}, {}, "lacks 'mode'"),
        ("bad_dtype", {"equimol/metadata.json": _json_edit(lambda m: m.update(dtype="float"))}, {}, "dtype"),
        ("not_json", {"equimol/metadata.json": lambda _: b"{"}, {}, "not JSON"),
    ],
)
def test_damaged_or_foreign_compiled_files_are_one_error(compiled, tmp_path, name, replace, add, message) -> None:
    crafted = rewrite_archive(compiled, tmp_path / f"{name}.pt2", replace, add)
    with pytest.raises(UnsafeArchiveError, match=message):
        load_model(crafted)


def test_a_flipped_bit_in_a_compiled_file_is_refused(compiled, tmp_path) -> None:
    data = bytearray(compiled.read_bytes())
    with zipfile.ZipFile(compiled) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/weight_0"))
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length  # the entry's bytes, after its local header
    data[start + 3] ^= 0x40  # an exponent bit of the first float32 weight
    (tmp_path / "flipped.pt2").write_bytes(bytes(data))
    with pytest.raises(UnsafeArchiveError, match="CRC"):
        load_model(tmp_path / "flipped.pt2")


def test_every_consumer_of_a_compiled_file_refuses_it(compiled, tmp_path, marker, capsys, shared_data) -> None:
    from lammps_case import ELEMENTS, cu_au_box, open_lammps

    from equimol.calculator import EquimolCalculator
    from equimol.torchsim import EquimolModel

    crafted = pickled_weight(compiled, tmp_path / "evil.pt2", marker)
    frames = write_tiny_frames(shared_data, tmp_path, 2)
    refused_in_one_line(capsys, main(["predict", str(crafted), str(frames), "--out", str(tmp_path / "o.xyz")]))
    refused_in_one_line(capsys, main(["eval", str(crafted), str(frames), "--json", str(tmp_path / "e.json")]))
    with pytest.raises(UnsafeArchiveError):
        EquimolCalculator(crafted)
    with pytest.raises(UnsafeArchiveError):
        EquimolModel(crafted)
    lmp = open_lammps(cu_au_box(temperature_k=0.0))
    with pytest.raises(UnsafeArchiveError):
        from equimol.lammps import EquimolFix

        EquimolFix(lmp, crafted, ELEMENTS)
    lmp.close()
    assert not (tmp_path / "o.xyz").exists() and not (tmp_path / "e.json").exists()


# ------------------------------------------------------------------------------- model files, checkpoints
def test_a_crafted_model_file_is_refused_everywhere(tmp_path, marker, capsys, shared_data) -> None:
    from equimol.calculator import EquimolCalculator
    from equimol.torchsim import EquimolModel

    evil = evil_model_file(tmp_path, marker)
    frames = write_tiny_frames(shared_data, tmp_path, 2)
    for command in (
        ["eval", str(evil), str(frames), "--json", str(tmp_path / "e.json")],
        ["predict", str(evil), str(frames), "--out", str(tmp_path / "o.xyz")],
        ["export", str(evil), str(tmp_path / "out.pt2"), "--format", "export"],
    ):
        refused_in_one_line(capsys, main(command), "evil_model.pt", "refused")
    with pytest.raises(UnsafeFileError, match="evil_model.pt"):
        EquimolCalculator(evil)
    with pytest.raises(UnsafeFileError, match="evil_model.pt"):
        EquimolModel(evil)


def test_a_crafted_checkpoint_is_refused_by_export_eval_and_lightning(tmp_path, marker, capsys, shared_data) -> None:
    from equimol.train.checkpoints import AtomicCheckpointIO

    evil = evil_checkpoint(tmp_path, marker)
    frames = write_tiny_frames(shared_data, tmp_path, 2)
    refused_in_one_line(capsys, main(["export", str(evil), str(tmp_path / "out.pt")]), "evil.ckpt", "refused")
    refused_in_one_line(capsys, main(["eval", str(evil), str(frames)]), "evil.ckpt", "refused")
    with pytest.raises(UnsafeFileError, match="evil.ckpt"):
        AtomicCheckpointIO().load_checkpoint(evil)  # what Lightning's trainer.fit(ckpt_path=...) calls


def _write_config(folder: Path, shared_data: Path, **sections) -> Path:
    values = tiny_config(shared_data, folder)
    for section, keys in sections.items():
        values[section].update(keys)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(values))
    return folder / "tiny.yaml"


def test_init_from_and_resume_refuse_crafted_files(tmp_path, marker, capsys, shared_data) -> None:
    from equimol.train.config import load_config

    evil = evil_model_file(tmp_path, marker)
    config = _write_config(tmp_path, shared_data, model={"init_from": str(evil)})
    refused_in_one_line(capsys, main(["train", str(config)]), "init_from", "evil_model.pt")
    config = _write_config(tmp_path, shared_data)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(load_config(config).as_dict(), sort_keys=False))
    evil_checkpoint(run / "checkpoints", marker, "last.ckpt")
    refused_in_one_line(capsys, main(["train", str(config), "--resume"]), "last.ckpt", "refused")


# ------------------------------------------------------------------------------------------- data files
def test_data_commands_refuse_a_crafted_lmdb(tmp_path, marker, capsys) -> None:
    evil = evil_lmdb(tmp_path, marker)
    model = export_model(tiny_potential(), tmp_path / "model.pt")
    for command in (
        ["data", "stats", str(evil), "--quiet", "--sample", "all"],
        ["data", "index", str(evil), "--quiet"],
        ["data", "convert", str(evil), str(tmp_path / "out.lmdb"), "--quiet"],
        ["predict", str(model), str(evil), "--out", str(tmp_path / "o.xyz"), "--quiet"],
    ):
        code = main(command)
        error = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in error and "evil.lmdb" in error, (command, error)
    assert not (tmp_path / "out.lmdb").exists() and not (tmp_path / "o.xyz").exists()


def test_datamodules_refuse_crafted_lmdbs_and_reference_pickles(tmp_path, marker) -> None:
    from equimol.datasets.datamodule import AtomsDataModule
    from equimol.datasets.lmdb_dataset import LmdbFrames
    from equimol.datasets.references import SystemReferences

    evil = evil_lmdb(tmp_path, marker)
    frames = LmdbFrames(evil)
    frames[0]  # a harmless frame of the same file reads
    with pytest.raises(UnsafeFileError, match=r"evil.lmdb, key 1: refused.*io.open"):
        frames[1]
    module = AtomsDataModule(train=str(evil), val_fraction=0.0, batch_size=1, statistics_sample=None)
    module.setup("fit")
    with pytest.raises(UnsafeFileError, match="evil.lmdb"):
        module.statistics("train")
    (tmp_path / "refs.pkl").write_bytes(pickle.dumps({"7": np.float64(-1.5), "8": Payload(marker)}))
    with pytest.raises(UnsafeFileError, match="refs.pkl"):
        SystemReferences.load(tmp_path / "refs.pkl")


def test_an_allow_listed_name_extends_the_data_allow_list(tmp_path, monkeypatch) -> None:
    """The documented escape hatch for a trusted file that needs one more class: exactly that name is added."""
    from equimol.safe_pickle import restricted_loads

    data = pickle.dumps({"weight": Fraction(1, 3)})
    with pytest.raises(UnsafeFileError, match="fractions.Fraction.*EQUIMOL_ALLOW_PICKLE_GLOBALS"):
        restricted_loads(data, "x")
    monkeypatch.setenv("EQUIMOL_ALLOW_PICKLE_GLOBALS", "fractions.Fraction")
    assert restricted_loads(data, "x")["weight"] == Fraction(1, 3)


def test_legacy_pickles_of_tensors_and_arrays_still_read(tmp_path) -> None:
    """PyG 1.x frames (fields in __dict__), protocol 2 and 5, float32 tensors, numpy arrays and scalars."""
    from equimol.safe_pickle import restricted_loads

    old = Data.__new__(Data)
    old.__dict__.update(pos=torch.arange(6.0).reshape(2, 3), natoms=2, y=np.float64(-3.0), tags=np.arange(2))
    for protocol in (2, 5):
        record = restricted_loads(pickle.dumps(old, protocol=protocol), "frame")
        assert torch.equal(record.__dict__["pos"], old.__dict__["pos"]) and record.__dict__["y"] == -3.0
    frame = Data(pos=torch.zeros(2, 3, dtype=torch.float64), cell=torch.eye(3)[None], sid="a", energy=np.float32(1))
    assert torch.equal(restricted_loads(pickle.dumps(frame), "frame").cell, frame.cell)


def test_a_periodic_h2_still_evaluates_after_the_checks(tmp_path) -> None:
    """The checks do not get in the way of an ordinary model file (written now, so with its checksum)."""
    from equimol.calculator import EquimolCalculator

    path = export_model(tiny_potential((1,)), tmp_path / "h.pt")
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.8]], cell=np.eye(3) * 6.0, pbc=True)
    atoms.calc = EquimolCalculator(path)
    assert np.isfinite(atoms.get_potential_energy())
