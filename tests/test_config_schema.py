"""The one config schema: :func:`equimol.config_schema.describe` lists exactly the keys the loader accepts,
every key has a meaning, a type and a default; one validator checks types, choices and bounds of every
section (``model.tp_options`` against the backend's constructor) before any data are read; old key
spellings still load with one deprecation line."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from pathlib import Path

import pytest
import yaml
from equimol.train.config import validate_config
from test_train_e2e import tiny_config

from equimol.config_fields import option
from equimol.config_schema import SECTION_CLASSES, SECTIONS, describe
from equimol.errors import ConfigError, EquimolDeprecationWarning


@pytest.fixture
def base(shared_data: Path, tmp_path: Path) -> dict:
    return tiny_config(shared_data, tmp_path)


def _set(config: dict, dotted: str, value, backend: str | None = None) -> dict:
    """A copy of ``config`` with ``dotted`` set to ``value`` (and ``model.tp_backend`` to ``backend``)."""
    config = copy.deepcopy(config)
    if backend:
        config["model"]["tp_backend"] = backend
    *path, key = dotted.split(".")
    node = config
    for part in path:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    node[key] = value
    return config


def test_every_key_has_a_meaning_type_and_one_name() -> None:
    entries = describe()
    names = [(entry["name"], entry.get("backend")) for entry in entries]
    assert len(names) == len(set(names))
    assert {entry["section"].split(".")[0] for entry in entries} == set(SECTIONS)
    for entry in entries:
        assert entry["doc"] and "\n" not in entry["doc"], entry["name"]
        assert entry["type"], entry["name"]
        assert set(entry) >= {"section", "key", "name", "type", "default", "choices", "bounds", "auto", "doc"}
    channels = next(entry for entry in entries if entry["name"] == "model.channels")
    assert (channels["type"], channels["default"], channels["bounds"]) == ("int", 32, {"ge": 1})
    backend = next(entry for entry in entries if entry["name"] == "model.tp_backend")
    assert {"cg", "gaunt", "cp"} <= set(backend["choices"])
    assert {entry["backend"] for entry in entries if entry["section"] == "model.tp_options"} >= {"cg", "gaunt", "cp"}
    assert next(e for e in entries if e["name"] == "model.avg_num_neighbors")["auto"] is True


def test_the_reference_covers_every_field_of_every_section() -> None:
    described = {entry["name"] for entry in describe()}
    for section, cls in SECTION_CLASSES.items():
        assert {f"{section}.{field.name}" for field in dataclasses.fields(cls)} <= described
    assert {"model.spe.mode", "loss.stage_two.start", "model.dispersion.xc", "model.init_from"} <= described


def test_every_described_key_is_accepted_by_the_loader(base: dict) -> None:
    """Each key of the reference that the base config leaves out, set to its default, passes the loader
    (``tp_options`` with their backend)."""
    skip = {
        "model.species",
        "model.init_from",
        "data.radial_cutoff",
        "model.dtype",
        "data.dtype",
        "data.train",
        "data.data_dir",
    }
    checked = 0
    for entry in describe():
        section, _, key = entry["name"].rpartition(".")
        given = base.get(section.split(".")[0], {}) if "." not in section else {}
        if entry["name"] in skip or section == "model.dispersion" or entry["default"] is None or key in given:
            continue
        validate_config(_set(base, entry["name"], entry["default"], entry.get("backend")))
        checked += 1
    assert checked > 80


def test_a_key_not_in_the_reference_is_refused(base: dict) -> None:
    for dotted in ("model.chanels", "model.spe.modes", "loss.stage_two.begin", "model.tp_options.strateg"):
        config = _set(base, dotted, 1)
        with pytest.raises(ConfigError, match=dotted.replace(".", r"\.")):
            validate_config(config)


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        ("model.lmax", 9, r"model\.lmax must be >= 0 and <= 8, got 9"),
        ("model.radial_mlp_hidden", [64, 0], r"model\.radial_mlp_hidden must be >= 1"),
        ("model.spe.polynomial_degree", 40, r"model\.spe\.polynomial_degree must be >= 0 and <= 32"),
        ("model.tp_options", {"strategy": 3}, r"model\.tp_options\.strategy must be str \(backend 'cg'\)"),
        ("data.val_fraction", 1.0, r"data\.val_fraction must be >= 0 and < 1"),
        ("data.config_type_weights", {"MD": -1.0}, r"data\.config_type_weights must be >= 0"),
        ("optimizer.ema_decay", 1.0, r"optimizer\.ema_decay must be > 0 and < 1"),
        ("scheduler.name", "step", r"scheduler\.name must be one of \['plateau', 'cosine', 'budget_cosine', 'none'\]"),
        ("trainer.seed", 2**32, r"trainer\.seed must be >= 0 and < 4294967296"),
        ("finetune.pretrained_lr_factor", -1.0, r"finetune\.pretrained_lr_factor must be >= 0"),
    ],
)
def test_one_validator_names_section_key_and_limit(base: dict, dotted: str, value, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(_set(base, dotted, value))


def test_a_tp_options_typo_fails_at_load_before_any_data_are_read(
    shared_data: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Through the CLI: one line naming the key, exit 2, no data module built, no run folder."""
    from equimol.datasets import datamodule

    from equimol.cli import main

    def no_data(*args, **kwargs):
        raise AssertionError("data were set up although the config is wrong")

    monkeypatch.setattr(datamodule.AtomsDataModule, "__init__", no_data)
    config = tiny_config(shared_data, tmp_path)
    config["model"].update(tp_backend="gaunt", tp_options={"strateg": "edge"})
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "typo.yaml")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("equimol train: error: ") and "\n" not in error
    assert "model.tp_options.strateg" in error and "typo.yaml" in error
    assert not (tmp_path / "run").exists()


def test_an_old_key_spelling_loads_with_one_deprecation_line(base: dict) -> None:
    old = _set(base, "trainer.compile", True)
    with pytest.warns(EquimolDeprecationWarning, match=r"trainer\.compile is deprecated, use trainer\.compile_step"):
        assert validate_config(old).trainer.compile_step is True
    with pytest.raises(ConfigError, match="same key"):
        validate_config(_set(old, "trainer.compile_step", True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert validate_config(_set(base, "trainer.compile_step", True)).trainer.compile_step is True


def test_a_config_option_needs_a_meaning() -> None:
    with pytest.raises(TypeError, match="doc"):

        @dataclasses.dataclass
        class Undocumented:
            size: int = option(1)
