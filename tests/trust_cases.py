"""The command-line cases of issue 31 for ``tests/test_cli_errors.py``: crafted files, outputs that would lose or mix
results, cells that crashed the process, silent wrongs and the raw tracebacks of the issue's list.

Each builder writes its inputs into the case's folder and returns the command line; :data:`TRUST_CASES` maps a case
to ``(builder, words its one-line message must contain)``, as ``CASES`` there. A read-only folder is ``/sys/kernel``
(sysfs refuses new files to every user, root included, so the test works as root too); a full disk is an
``RLIMIT_FSIZE`` limit on the child (:data:`FILE_SIZE_LIMITS`), under which writes fail with ``EFBIG`` as they
fail with ``ENOSPC`` on a full disk.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import ase.io
import numpy as np
import torch
import yaml
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from test_train_e2e import tiny_config, write_tiny_frames

ROOT = Path(__file__).resolve().parents[1]
OLD_RUN = Path(__file__).with_name("data") / "run_before_trust"
READ_ONLY = "/sys/kernel"


class Payload:
    """Unpickling it creates ``PAYLOAD_RAN`` in the case's folder, which the case's file comparison would see."""

    def __reduce__(self):
        return (open, ("PAYLOAD_RAN", "w"))


def frames(folder: Path, shared: Path, count: int = 3) -> str:
    return write_tiny_frames(shared, folder, count).name


def checkpoint(folder: Path, name: str = "x.ckpt") -> str:
    shutil.copy(OLD_RUN / "checkpoints" / "last.ckpt", folder / name)
    return name


def model(folder: Path) -> str:
    shutil.copy(OLD_RUN / "model.pt", folder / "model.pt")
    return "model.pt"


def config(folder: Path, shared: Path, **trainer) -> str:
    values = tiny_config(shared, folder, max_epochs=1, test_after_fit=False, **trainer)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(values))
    return "tiny.yaml"


def labelled(atoms: Atoms, stress: bool = False) -> Atoms:
    values = {"energy": -1.0, "forces": np.zeros((len(atoms), 3))}
    if stress:
        values["stress"] = np.zeros(6)
    atoms.calc = SinglePointCalculator(atoms, **values)
    return atoms


def write(folder: Path, name: str, structures: list[Atoms]) -> str:
    ase.io.write(folder / name, structures, format="extxyz")
    return name


def h2_in(cell, pbc=True) -> Atoms:
    return Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=np.asarray(cell, dtype=float), pbc=pbc)


def evil_checkpoint(folder: Path) -> str:
    torch.save({"state_dict": {}, "model_config": {}, "epoch": 0, "payload": Payload()}, folder / "evil.ckpt")
    return "evil.ckpt"


def evil_lmdb(folder: Path) -> str:
    import lmdb
    from torch_geometric.data import Data

    env = lmdb.open(str(folder / "evil.lmdb"), subdir=False, map_size=1 << 22)
    with env.begin(write=True) as txn:
        frame = Data(pos=torch.zeros(2, 3), cell=torch.eye(3)[None] * 9, atomic_numbers=torch.tensor([1, 1]))
        frame.note = Payload()
        txn.put(b"0", pickle.dumps(frame))
        txn.put(b"length", pickle.dumps(1))
    env.close()
    return "evil.lmdb"


def compiled_stub(folder: Path, **changes) -> str:
    """A ``.pt2`` holding only equimol's metadata (and its archive header), with ``changes`` to the metadata."""
    metadata = {"format": "equimol-compiled", "mode": "export", "species": [1, 6, 7, 8], "radial_cutoff": 5.0}
    metadata.update({"dtype": "float64", "device_type": "cpu", "model_config": {}, **changes})
    metadata = {key: value for key, value in metadata.items() if value is not None}
    with zipfile.ZipFile(folder / "model.pt2", "w") as archive:
        archive.writestr("model/archive_format", "pt2")
        archive.writestr("model/equimol/metadata.json", json.dumps(metadata))
    return "model.pt2"


def model_with(folder: Path, **changes) -> str:
    payload = torch.load(OLD_RUN / "model.pt", weights_only=True)
    payload.update(changes)
    torch.save(payload, folder / "changed.pt")
    return "changed.pt"


def fake_run(folder: Path) -> None:
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy(OLD_RUN / "checkpoints" / "last.ckpt", folder / "checkpoints" / "last.ckpt")
    shutil.copy(OLD_RUN / "model.pt", folder / "model.pt")


def lammps_every(folder: Path, every: int) -> list[str]:
    script = (ROOT / "examples" / "lammps" / "in.npt.lmp").read_text()
    script = script.replace("pf/callback 1 1", f"pf/callback {every} 1")
    (folder / "in.lmp").write_text(re.sub(r"^run\s+\d+", "run 2", script, flags=re.M))
    shutil.copy(ROOT / "examples" / "lammps" / "cu_au.data", folder / "cu_au.data")
    from lammps_case import tiny_model

    from equimol.export import export_model

    export_model(tiny_model(), folder / "cuau.pt")
    return ["lammps", "cuau.pt", "in.lmp", "--elements", "Cu", "Au", "--quiet"]


def predict(folder: Path, name: str) -> list[str]:
    return ["predict", model(folder), name, "--quiet"]


TRUST_CASES = {
    # crafted files: the payload would create PAYLOAD_RAN, which the file comparison would catch
    "eval_crafted_checkpoint": (lambda f, s: ["eval", evil_checkpoint(f), frames(f, s)], ["evil.ckpt", "refused"]),
    "export_crafted_checkpoint": (lambda f, s: ["export", evil_checkpoint(f), "o.pt"], ["evil.ckpt", "refused"]),
    "stats_crafted_lmdb": (lambda f, s: ["data", "stats", evil_lmdb(f), "--quiet"], ["evil.lmdb", "refused"]),
    "predict_crafted_lmdb": (
        lambda f, s: [*predict(f, evil_lmdb(f)), "--out", "o.xyz"],
        ["evil.lmdb", "key 0", "refused"],
    ),
    # outputs that would lose or mix results
    "export_output_is_its_input": (lambda f, s: ["export", checkpoint(f), "x.ckpt"], ["x.ckpt", "input"]),
    "predict_out_is_an_input": (lambda f, s: [*predict(f, frames(f, s)), "--out", "tiny.xyz"], ["tiny.xyz", "input"]),
    "predict_out_exists": (
        lambda f, s: [*predict(f, frames(f, s)), "--out", write_text(f, "o.xyz", "kept")],
        ["o.xyz", "--overwrite"],
    ),
    "predict_out_is_a_folder": (
        lambda f, s: [*predict(f, frames(f, s)), "--out", make_folder(f, "o.xyz"), "--overwrite"],
        ["o.xyz", "folder"],
    ),
    "eval_json_exists": (
        lambda f, s: ["eval", model(f), frames(f, s), "--json", write_text(f, "e.json", "{}")],
        ["e.json", "--overwrite"],
    ),
    "convert_unreadable_output_name": (
        lambda f, s: ["data", "convert", frames(f, s), "out_noext", "--quiet"],
        ["out_noext", ".lmdb"],
    ),
    "train_committee_into_a_single_run": (
        lambda f, s: ["train", config(f, s), "trainer.committee_seeds=[1,2]", "--overwrite", *fake(f / "run")],
        ["holds a single run"],
    ),
    "train_single_run_into_a_committee": (
        lambda f, s: ["train", config(f, s), "--overwrite", *fake(f / "run" / "member_1")],
        ["holds a committee", "member_1"],
    ),
    # cells that killed the process (SIGFPE) inside the neighbor list
    "predict_long_cell": (
        lambda f, s: [*predict(f, write(f, "c.xyz", [h2_in(np.diag([3.6, 1e6, 3.6]))])), "--out", "o.xyz"],
        ["c.xyz:0", "lopsided"],
    ),
    "predict_1e300_vector": (
        lambda f, s: [*predict(f, write(f, "c.xyz", [h2_in(np.diag([1e300, 3.6, 3.6]))])), "--out", "o.xyz"],
        ["c.xyz:0"],
    ),
    "train_long_cell": (
        lambda f, s: train_frames(f, s, [labelled(h2_in(np.diag([3.6, 1e6, 3.6]))) for _ in range(5)]),
        ["bad.xyz", "frame 0", "lopsided"],
    ),
    "predict_periodic_frame_without_cell": (
        lambda f, s: [*predict(f, write(f, "c.xyz", [h2_in(np.zeros((3, 3)))])), "--out", "o.xyz"],
        ["c.xyz:0", "spans no volume"],
    ),
    # silent wrongs
    "export_device_without_compile": (
        lambda f, s: ["export", checkpoint(f), "m.pt", "--device", "cuda"],
        ["--device", "--format aotinductor"],
    ),
    "lammps_callback_every_10_steps": (lambda f, s: lammps_every(f, 10), ["pf/callback 10 1", "every step"]),
    "eval_changed_weight": (
        lambda f, s: ["eval", changed_weight(f), frames(f, s)],
        ["changed.pt", "weights_sha256", "damaged"],
    ),
    # raw tracebacks of the issue
    "train_partial_stress": (
        lambda f, s: train_frames(f, s, [labelled(h2_in(np.eye(3) * 6), stress=i % 2 == 0) for i in range(6)]),
        ["stress", "frame"],
    ),
    "eval_partial_stress": (
        lambda f, s: ["eval", model(f), write(f, "ps.xyz", partial_stress_frames(f, s)), "--batch-size=4", "--quiet"],
        ["stress label", "--stress-key none"],
    ),
    "predict_full_disk": (lambda f, s: [*predict(f, frames(f, s, 6)), "--out", "o.xyz"], ["o.xyz", "too large"]),
    "convert_full_disk": (lambda f, s: ["data", "convert", frames(f, s, 6), "o.lmdb", "--quiet"], ["o.lmdb"]),
    "eval_full_disk": (
        lambda f, s: ["eval", model(f), frames(f, s), "--json", "e.json", "--plot", "parity.png", "--quiet"],
        ["parity.png", "too large"],
    ),
    "train_full_disk": (lambda f, s: ["train", config(f, s)], ["large"]),
    "predict_read_only_folder": (
        lambda f, s: [*predict(f, frames(f, s)), "--out", f"{READ_ONLY}/o.xyz"],
        [READ_ONLY, "ermission denied"],
    ),
    "convert_read_only_folder": (
        lambda f, s: ["data", "convert", frames(f, s), f"{READ_ONLY}/o.lmdb", "--quiet"],
        [READ_ONLY],
    ),
    "eval_read_only_folder": (
        lambda f, s: ["eval", model(f), frames(f, s), "--json", f"{READ_ONLY}/e.json", "--quiet"],
        [READ_ONLY],
    ),
    "export_read_only_folder": (lambda f, s: ["export", checkpoint(f), f"{READ_ONLY}/m.pt"], [READ_ONLY]),
    "train_read_only_folder": (
        lambda f, s: ["train", config(f, s), f"trainer.run_dir={READ_ONLY}/run"],
        [READ_ONLY, "run"],
    ),
    "predict_compiled_file_without_mode": (
        lambda f, s: ["predict", compiled_stub(f, mode=None), frames(f, s), "--out", "o.xyz"],
        ["model.pt2", "lacks 'mode'"],
    ),
    "predict_compiled_file_bad_dtype": (
        lambda f, s: ["predict", compiled_stub(f, dtype="float16"), frames(f, s), "--out", "o.xyz"],
        ["model.pt2", "dtype"],
    ),
    # smaller issues
    "train_negative_seed": (lambda f, s: ["train", config(f, s), "trainer.seed=-1"], ["trainer.seed"]),
    "eval_garbled_format_version": (
        lambda f, s: ["eval", model_with(f, format_version="two"), frames(f, s)],
        ["changed.pt", "format_version"],
    ),
}
# writes fail beyond this many bytes (a full disk): enough for the inputs' reading, not for the outputs
FILE_SIZE_LIMITS = {"predict_full_disk": 2000, "convert_full_disk": 3000, "eval_full_disk": 3000}
FILE_SIZE_LIMITS["train_full_disk"] = 20000
# a training that fails after it started leaves what it wrote before the failure (config.yaml, logs, the data
# statistics cache), no checkpoint
MAY_CREATE = {name: ("run", ".equimol_statistics") for name in ("train_full_disk", "train_partial_stress")}
# these fail once training has started, after Lightning's informational lines: the error is the last line
STARTED = set(MAY_CREATE)


def write_text(folder: Path, name: str, text: str) -> str:
    (folder / name).write_text(text)
    return name


def make_folder(folder: Path, name: str) -> str:
    (folder / name).mkdir()
    return name


def fake(run: Path) -> list[str]:
    fake_run(run)
    return []


def train_frames(folder: Path, shared: Path, structures: list[Atoms]) -> list[str]:
    write(folder, "bad.xyz", structures)
    values = tiny_config(shared, folder, max_epochs=1, test_after_fit=False)
    values["model"]["species"] = ["H"]
    values["data"].update(train="bad.xyz", test=None, val_fraction=0.2, element_references=None)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(values))
    return ["train", "tiny.yaml"]


def partial_stress_frames(folder: Path, shared: Path) -> list[Atoms]:
    structures = ase.io.read(folder / frames(folder, shared, 4), ":")
    (folder / "tiny.xyz").unlink()
    for index, atoms in enumerate(structures):
        atoms.cell, atoms.pbc = np.eye(3) * 20.0, True
        labelled(atoms, stress=index == 1)
    return structures


def changed_weight(folder: Path) -> str:
    """A model file with one weight changed after its checksum was written (a bit flip, as the zip CRC misses it
    once the file is saved again)."""
    from equimol.export import export_model, load_model

    export_model(load_model(OLD_RUN / "model.pt"), folder / "changed.pt")
    payload = torch.load(folder / "changed.pt", weights_only=True)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = payload["state_dict"][name] * 1e79
    torch.save(payload, folder / "changed.pt")
    return "changed.pt"
