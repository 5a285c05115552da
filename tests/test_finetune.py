"""Fine-tuning from a model file: ``model.init_from``, new elements, E0s, ``finetune.freeze``, lr factor.

Weights copied from a file are compared bit for bit (``torch.equal``); predictions of a model that
only gained an element are compared with the pretrained model's at 1e-12 relative (same float64
arithmetic, different summation order of nothing: in practice equal).
"""

from __future__ import annotations

import pytest
import torch
import yaml
from ase.build import molecule
from equimol.train.config import ConfigError, validate_config
from equimol.train.module import PotentialModule
from test_model_structures import single_thread  # noqa: F401
from test_train_e2e import tiny_config as tiny_training_config

from equimol.calculator import EquimolCalculator
from equimol.cli import main
from equimol.export import export_model, load_model
from equimol.models import build_model

E0S = {"H": -13.6, "C": -1029.5, "N": -1485.0, "O": -2042.0}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, shared_data):
    """A model file with the tiny training architecture (random weights, seed 11) and E0s."""
    folder = tmp_path_factory.mktemp("pretrained")
    section = dict(tiny_training_config(shared_data, folder)["model"])
    section.update(avg_num_neighbors=9.5, e0s=E0S, energy_shift=0.3, energy_scale=0.7, seed=11)
    model = build_model(section)
    return export_model(model, folder / "pretrained.pt"), model.eval()


def _raw(shared_data, folder, model: dict, **sections) -> dict:
    raw = tiny_training_config(shared_data, folder, max_epochs=1, test_after_fit=False)
    raw["model"] = model
    raw.update(sections)
    return raw


def _module(shared_data, tmp_path, model: dict, **sections) -> PotentialModule:
    config = validate_config(_raw(shared_data, tmp_path, model, **sections))
    resolved = config.model.resolve_auto({"energy_shift": 0.0, "energy_scale": 1.0})
    return PotentialModule(model=resolved, optimizer={"lr": 0.01}, finetune=config.finetune, init_from=config.init_from)


def test_model_section_inherits_the_file_and_weights_are_copied(shared_data, tmp_path, pretrained):
    path, reference = pretrained
    config = validate_config(_raw(shared_data, tmp_path, {"init_from": str(path), "avg_num_neighbors": "auto"}))
    assert config.model.channels == reference.config.channels and config.model.avg_num_neighbors == 9.5
    module = _module(shared_data, tmp_path, {"init_from": str(path)})
    stored = reference.state_dict()
    for name, tensor in module.model.state_dict().items():
        assert torch.equal(tensor, stored[name]), name
    assert module.pretrained_names == {name for name, _ in module.model.named_parameters()}


def test_new_element_gets_fresh_weights_and_known_molecules_are_unchanged(shared_data, tmp_path, pretrained):
    path, reference = pretrained
    model = {"init_from": str(path), "species": ["H", "C", "N", "O", "F"], "e0s": {**E0S, "F": -2700.0}, "seed": 4}
    module = _module(shared_data, tmp_path, model)
    tuned = module.model.eval()
    assert tuned.species == [1, 6, 7, 8, 9]
    fresh = build_model(tuned.config)
    assert torch.equal(tuned.embedding.weight[:4], reference.embedding.weight)
    assert torch.equal(tuned.embedding.weight[4], fresh.embedding.weight[4])
    assert not torch.equal(tuned.embedding.weight[4], reference.embedding.weight[0])
    assert torch.equal(tuned.readout.energy_scale[:4], reference.readout.energy_scale)
    atoms = molecule("CH3CH2OH")
    energies = []
    for potential in (reference, tuned):
        atoms.calc = EquimolCalculator(potential)
        energies.append(atoms.get_potential_energy())
    assert energies[1] == pytest.approx(energies[0], rel=1e-12)


def test_e0s_come_from_the_config(shared_data, tmp_path, pretrained):
    path, reference = pretrained
    shifted = {key: value + 1.0 for key, value in E0S.items()}
    tuned = _module(shared_data, tmp_path, {"init_from": str(path), "e0s": shifted}).model.eval()
    assert torch.equal(tuned.readout.e0s, reference.readout.e0s + 1.0)
    atoms = molecule("CH3CH2OH")
    energies = []
    for potential in (reference, tuned):
        atoms.calc = EquimolCalculator(potential)
        energies.append(atoms.get_potential_energy())
    assert energies[1] - energies[0] == pytest.approx(len(atoms), rel=1e-9)
    # e0s: auto takes the new data's references (data.element_references: 3BPA's isolated atoms)
    config = validate_config(_raw(shared_data, tmp_path, {"init_from": str(path), "e0s": "auto"}))
    assert config.model.e0s == "auto"


def test_incompatible_architecture_is_one_config_error_naming_the_keys(shared_data, tmp_path, pretrained, capsys):
    path, _ = pretrained
    raw = _raw(shared_data, tmp_path, {"init_from": str(path), "channels": 8, "lmax": 2, "e0s": "auto"})
    with pytest.raises(ConfigError, match=r"\['channels', 'lmax'\]"):
        validate_config(raw)
    config_file = tmp_path / "finetune.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    assert main(["train", str(config_file)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "channels" in error[0] and "lmax" in error[0] and "init_from" in error[0]
    missing = _raw(shared_data, tmp_path, {"init_from": str(tmp_path / "nope.pt")})
    with pytest.raises(ConfigError, match="model.init_from.*does not exist"):
        validate_config(missing)


def test_freeze_and_learning_rate_factor(shared_data, tmp_path, pretrained):
    path, _ = pretrained
    finetune = {"freeze": ["embedding", "interactions.0"], "pretrained_lr_factor": 0.1}
    model = {"init_from": str(path), "species": ["H", "C", "N", "O", "F"], "e0s": {**E0S, "F": -2700.0}}
    module = _module(shared_data, tmp_path, model, finetune=finetune)
    frozen = {name for name, p in module.model.named_parameters() if not p.requires_grad}
    assert "embedding.weight" in frozen and any(name.startswith("interactions.0.") for name in frozen)
    assert not any(name.startswith("interactions.1.") or name.startswith("readout.") for name in frozen)
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    parameters = dict(module.model.named_parameters())
    assert not any(id(parameters[name]) in in_optimizer for name in frozen)
    assert [group["lr"] for group in optimizer.param_groups] == [pytest.approx(0.001)]
    with pytest.raises(ConfigError, match="need model.init_from"):
        validate_config(_raw(shared_data, tmp_path, {"init_from": None, "avg_num_neighbors": 3.0}, finetune=finetune))


def test_unknown_freeze_prefix_names_it(shared_data, tmp_path, pretrained):
    path, _ = pretrained
    with pytest.raises(ValueError, match="finetune.freeze: 'embeding'"):
        _module(shared_data, tmp_path, {"init_from": str(path)}, finetune={"freeze": ["embeding"]})


def test_finetune_run_keeps_frozen_weights(shared_data, tmp_path, pretrained):
    from equimol.train.run import train

    path, reference = pretrained
    raw = _raw(shared_data, tmp_path, {"init_from": str(path), "e0s": "auto"}, finetune={"freeze": ["embedding"]})
    result = train(validate_config(raw))
    tuned = load_model(result["model"])
    assert torch.equal(tuned.embedding.weight, reference.embedding.weight)
    assert not torch.equal(tuned.readout.mlp[0].weight, reference.readout.mlp[0].weight)
