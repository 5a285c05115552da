"""The typed model section of a training config: ``TrainingConfig.model`` is a ModelConfig that keeps
``"auto"``, and :meth:`ModelConfig.resolve_auto` is the one step that fills those keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from equimol.train.config import AUTO_MODEL_KEYS, AUTO_STAND_INS, load_config, validate_config
from equimol.train.module import PotentialModule
from equimol.train.run_folder import unresumable_changes
from harness import tiny_model_section
from test_train_e2e import tiny_config, write_tiny_config

from equimol.config_schema import describe
from equimol.errors import ConfigError
from equimol.models import build_model
from equimol.models.config import ModelConfig

STATISTICS = {"avg_num_neighbors": 9.5, "e0s": {1: -13.6, 6: -1029.5, 7: -1485.3, 8: -2042.6}}
STATISTICS.update(energy_shift={1: 0.1, 6: 0.2, 7: 0.3, 8: 0.4}, energy_scale=0.7)


@pytest.fixture
def config(shared_data: Path, tmp_path: Path):
    return load_config(write_tiny_config(shared_data, tmp_path))


def test_load_config_holds_a_model_config_with_auto_kept(config) -> None:
    assert isinstance(config.model, ModelConfig)
    assert config.model.unresolved() == ["avg_num_neighbors", "e0s", "energy_shift", "energy_scale"]
    assert config.model.species == [1, 6, 7, 8] and config.model.channels == 4
    plain = config.as_dict()["model"]
    assert type(plain) is dict and all(plain[key] == "auto" for key in AUTO_MODEL_KEYS)


def test_auto_keys_are_declared_once_by_the_annotations() -> None:
    assert (
        set(ModelConfig.auto_keys())
        == set(AUTO_MODEL_KEYS)
        == {
            "avg_num_neighbors",
            "e0s",
            "energy_shift",
            "energy_scale",
        }
    )
    described = {entry["key"] for entry in describe(("model",)) if entry["auto"]}
    assert described == set(AUTO_MODEL_KEYS) == set(AUTO_STAND_INS)  # every auto key has a stand-in
    entry = next(entry for entry in describe(("model",)) if entry["key"] == "energy_scale")
    assert entry["type"] == "float | dict | 'auto'"


def test_resolve_auto_replaces_every_auto_in_a_new_config(config) -> None:
    resolved = config.model.resolve_auto(STATISTICS)
    assert resolved is not config.model and resolved.unresolved() == []
    for key, value in STATISTICS.items():
        assert getattr(resolved, key) == value
    assert config.model.unresolved() == list(STATISTICS)  # the loaded config is left as it was
    assert dataclasses.replace(resolved, **{key: "auto" for key in STATISTICS}) == config.model


def test_resolve_auto_keeps_numbers_given_in_the_config(shared_data: Path, tmp_path: Path) -> None:
    raw = tiny_config(shared_data, tmp_path)
    raw["model"]["energy_scale"] = 2.0
    model = validate_config(raw).model
    assert model.unresolved() == ["avg_num_neighbors", "e0s", "energy_shift"]
    assert model.resolve_auto(STATISTICS).energy_scale == 2.0


def test_resolve_auto_refuses_a_missing_statistic_naming_the_key(config) -> None:
    values = {key: value for key, value in STATISTICS.items() if key != "energy_shift"}
    with pytest.raises(ConfigError, match=r"^model\.energy_shift is 'auto' but the training data gave no value"):
        config.model.resolve_auto(values)
    with pytest.raises(ConfigError, match=r"^model\.e0s is 'auto'"):
        config.model.resolve_auto({**STATISTICS, "e0s": "auto"})


def test_resolve_auto_checks_the_values_it_is_given(config) -> None:
    with pytest.raises(ConfigError, match=r"model\.avg_num_neighbors must be > 0, got -1\.0"):
        config.model.resolve_auto({**STATISTICS, "avg_num_neighbors": -1.0})
    with pytest.raises(ConfigError, match=r"model\.energy_scale must be float \| dict \| 'auto', got 'big'"):
        config.model.resolve_auto({**STATISTICS, "energy_scale": "big"})
    with pytest.raises(ConfigError, match=r"\['channels'\] are not filled from the data"):
        config.model.resolve_auto({**STATISTICS, "channels": 8})


def test_auto_only_where_the_annotation_allows_it(shared_data: Path, tmp_path: Path) -> None:
    raw = tiny_config(shared_data, tmp_path)
    raw["model"]["channels"] = "auto"
    with pytest.raises(ConfigError, match=r"model\.channels must be int, got 'auto'"):
        validate_config(raw)
    raw["model"]["channels"] = 4
    raw["model"]["energy_scale"] = "automatic"
    with pytest.raises(ConfigError, match=r"model\.energy_scale must be float \| dict \| 'auto', got 'automatic'"):
        validate_config(raw)


def test_build_model_takes_a_resolved_config_without_validating_it_again(config, monkeypatch) -> None:
    with pytest.raises(ConfigError, match="model.avg_num_neighbors, model.e0s"):
        build_model(config.model)
    resolved = config.model.resolve_auto(STATISTICS)

    def refuse(self) -> None:
        raise AssertionError("validated twice")

    monkeypatch.setattr(ModelConfig, "validate", refuse)
    assert build_model(resolved).species == [1, 6, 7, 8]
    with pytest.raises(AssertionError, match="validated twice"):  # one made by hand is validated
        build_model(ModelConfig(species=["H"], avg_num_neighbors=3.0))


def test_module_hyperparameters_are_plain_data(config, tmp_path: Path) -> None:
    """The sections travel as dataclasses; a checkpoint stores them as mappings (read with weights_only)."""
    module = PotentialModule(
        model=config.model.resolve_auto(STATISTICS),
        loss=config.loss,
        optimizer=config.optimizer,
        scheduler=config.scheduler,
        finetune=config.finetune,
    )
    assert module.loss_config is config.loss and module.optimizer_config is config.optimizer
    path = tmp_path / "hparams.pt"
    torch.save(dict(module.hparams), path)
    stored = torch.load(path, weights_only=True)
    assert stored["model"]["avg_num_neighbors"] == 9.5 and stored["model"]["species"] == [1, 6, 7, 8]
    assert stored["loss"] == dataclasses.asdict(config.loss)
    assert stored["optimizer"] == dataclasses.asdict(config.optimizer)


def test_recorded_config_round_trips_and_old_spellings_resume(config) -> None:
    written = yaml.safe_load(yaml.safe_dump(config.as_dict(), sort_keys=False))
    assert unresumable_changes(written, config.as_dict()) == []
    # an older config.yaml: symbols, sh_lmax left out, resolved statistics
    old = {**written, "model": {**tiny_model_section(["H", "C", "N", "O"]), **STATISTICS}}
    old["model"]["dtype"] = config.model.dtype
    assert unresumable_changes(old, config.as_dict()) == []
    changed = {**old, "model": {**old["model"], "channels": 8}}
    assert unresumable_changes(changed, config.as_dict()) == ["model.channels"]
