"""Config validation: every shipped config passes; unknown keys, wrong types and missing files fail at once,
before any data are read, naming the key; overrides; the CLI's exit status and message."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from equimol.train.config import ConfigError, apply_overrides, load_config, parse_override, validate_config
from test_train_e2e import tiny_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(p.name for p in CONFIGS.glob("*.yaml"))


def test_the_four_configs_ship() -> None:
    assert {"3bpa_quick.yaml", "3bpa.yaml", "oc20_s2ef.yaml", "oc22_s2ef.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_validates(name: str, shared_data: Path) -> None:
    overrides = []
    if name == "oc22_s2ef.yaml":
        # no OC22 structures ship (shared/data/README.md): stand in existing files for the LMDB folders
        overrides = [
            f"data.data_dir={shared_data}",
            "data.train=oc20/oc20_single_adslab_atoms.json",
            "data.val=oc20/oc20_single_adslab_atoms.json",
        ]
    config = load_config(CONFIGS / name, overrides)
    assert config.model.tp_backend in ("cg", "gaunt", "cp")
    assert config.model.dtype == config.data["dtype"] == f"float{config.trainer.precision}"


@pytest.mark.parametrize("backend", ["cg", "gaunt", "cp"])
def test_backend_is_one_key(backend: str) -> None:
    config = load_config(CONFIGS / "3bpa_quick.yaml", [f"model.tp_backend={backend}", "model.spe.enabled=true"])
    assert config.model.tp_backend == backend and config.model.spe.enabled is True


@pytest.fixture
def base(shared_data: Path, tmp_path: Path) -> dict:
    return tiny_config(shared_data, tmp_path)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("model", "chanels"),
        ("data", "trian"),
        ("loss", "force_weight"),
        ("optimizer", "learning_rate"),
        ("scheduler", "patiense"),
        ("trainer", "max_epoch"),
    ],
)
def test_unknown_key_is_named(base: dict, section: str, key: str) -> None:
    base[section] = {**base.get(section, {}), key: 1}
    with pytest.raises(ConfigError, match=key):
        validate_config(base)


def test_unknown_nested_key_and_section_are_named(base: dict) -> None:
    base["model"]["spe"] = {"enabeld": True}
    with pytest.raises(ConfigError, match="enabeld"):
        validate_config(base)
    with pytest.raises(ConfigError, match="trainre"):
        validate_config({**tiny_config_copy(base), "trainre": {}})


def tiny_config_copy(config: dict) -> dict:
    return yaml.safe_load(yaml.safe_dump(config))


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        ("trainer.max_epochs", "ten", "trainer.max_epochs must be int"),
        ("data.batch_size", 2.5, "data.batch_size must be int"),
        ("optimizer.lr", "fast", "optimizer.lr must be float"),
        ("optimizer.name", "sgd", r"optimizer.name must be one of \['adam', 'adamw'\]"),
        ("trainer.precision", 16, r"trainer.precision must be one of \[32, 64\]"),
        ("loss.forces_weight", -1.0, "loss"),
        ("model.channels", "many", "channels"),
        ("model.tp_backend", "nope", "nope"),
        ("trainer.max_time", "10 minutes", "trainer.max_time"),
    ],
)
def test_wrong_type_or_value_is_named(base: dict, dotted: str, value, message: str) -> None:
    section, key = dotted.split(".")
    base[section] = {**base.get(section, {}), key: value}
    with pytest.raises((ConfigError, ValueError), match=message):
        validate_config(base)


def test_missing_file_is_named(base: dict) -> None:
    base["data"]["train"] = "no_such_file.xyz"
    with pytest.raises(ConfigError, match=r"data.train: .*no_such_file.xyz.* does not exist"):
        validate_config(base)
    base["data"]["train"] = "tiny.xyz"
    base["data"]["element_references"] = "/nowhere/iso_atoms.xyz"
    with pytest.raises(ConfigError, match="data.element_references"):
        validate_config(base)
    base["data"]["data_dir"] = "/nowhere"
    with pytest.raises(ConfigError, match="data.data_dir"):
        validate_config(base)


def test_precision_sets_both_dtypes_and_contradictions_fail(base: dict) -> None:
    base["trainer"]["precision"] = 32
    config = validate_config(tiny_config_copy(base))
    assert config.model.dtype == config.data["dtype"] == "float32"
    base["model"]["dtype"] = "float64"
    with pytest.raises(ConfigError, match="model.dtype"):
        validate_config(base)


def test_overrides() -> None:
    assert parse_override("trainer.max_epochs=3") == (["trainer", "max_epochs"], 3)
    assert parse_override("data.train=[a.xyz, b.xyz]") == (["data", "train"], ["a.xyz", "b.xyz"])
    assert parse_override("model.spe.enabled=true") == (["model", "spe", "enabled"], True)
    assert apply_overrides({"model": {"spe": {}}}, ["model.spe.mode=exact"]) == {"model": {"spe": {"mode": "exact"}}}
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("trainer.max_epochs")
    with pytest.raises(ConfigError, match="unknown section 'trainr'"):
        apply_overrides({}, ["trainr.max_epochs=3"])


def test_relative_data_dir_follows_the_config_file(shared_data: Path, tmp_path: Path) -> None:
    config = tiny_config(shared_data, tmp_path)
    config["data"]["data_dir"] = "."
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert load_config(tmp_path / "c.yaml").data["data_dir"] == str(tmp_path.resolve())


def test_cli_misspelt_key_fails_fast_and_names_it(shared_data: Path, tmp_path: Path) -> None:
    """The subprocess imports torch, e3nn and Lightning; measured wall time is printed (no timing assertion)."""
    config = tiny_config(shared_data, tmp_path)
    config["optimizer"]["lerning_rate"] = 0.01
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from equimol.cli import main; sys.exit(main())",
            "train",
            str(tmp_path / "bad.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(f"config error reported after {time.perf_counter() - start:.2f} s")
    assert result.returncode == 2
    assert "optimizer.lerning_rate" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # nothing started


def test_the_data_cutoff_is_the_models(base: dict) -> None:
    base["model"]["radial_cutoff"] = 4.5
    base["data"].pop("radial_cutoff", None)
    assert validate_config(tiny_config_copy(base)).data["radial_cutoff"] == 4.5
    base["data"]["radial_cutoff"] = 4.5  # the same value twice is allowed
    assert validate_config(tiny_config_copy(base)).data["radial_cutoff"] == 4.5
    base["data"]["radial_cutoff"] = 2.0
    with pytest.raises(ConfigError, match=r"data\.radial_cutoff=2\.0 differs from model\.radial_cutoff=4\.5"):
        validate_config(base)
