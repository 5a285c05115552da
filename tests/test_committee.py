"""Committees: EquimolCalculator with several models (mean and spread), and ``trainer.committee_seeds``.

Exactness: identical members give bit-identical predictions, so their spread is exactly 0. The mean
is compared with the single-model calculators at 1e-12 relative (float64 sums of three numbers).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk, molecule
from test_model_structures import single_thread, tiny_config  # noqa: F401
from test_train_e2e import tiny_config as tiny_training_config

from equimol.calculator import EquimolCalculator
from equimol.cli import main
from equimol.committee import COMMITTEE_PROPERTIES, committee_results
from equimol.export import export_model
from equimol.models import build_model


def _model(seed: int, **overrides):
    config = tiny_config(spe={"enabled": False}, many_body="none", seed=seed, **overrides)
    return build_model(config).eval()


@pytest.fixture(scope="module")
def members() -> list:
    return [_model(seed) for seed in (0, 1, 2)]


def _periodic():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=0)
    return atoms


def test_identical_members_have_exactly_zero_spread(members, tmp_path):
    path = export_model(members[0], tmp_path / "model.pt")
    for committee in ([members[0], members[0]], [path, path, path]):
        atoms = _periodic()
        atoms.calc = EquimolCalculator(committee)
        atoms.get_stress()
        results = atoms.calc.results
        assert results["energy_std"] == 0.0
        assert np.all(results["forces_std"] == 0.0) and np.all(results["stress_std"] == 0.0)
        assert np.all(results["energies_std"] == 0.0)
        assert len(results["energy_members"]) == len(committee)


def test_different_seeds_spread_and_mean(members):
    atoms = molecule("CH3CH2OH")
    atoms.calc = EquimolCalculator(members)
    forces = atoms.get_forces()
    results = dict(atoms.calc.results)
    singles = []
    for model in members:
        single = atoms.copy()
        single.calc = EquimolCalculator(model)
        singles.append((single.get_potential_energy(), single.get_forces()))
    energies = np.array([energy for energy, _ in singles])
    assert results["energy"] == pytest.approx(energies.mean(), rel=1e-12)
    assert results["energy_std"] == pytest.approx(energies.std(), rel=1e-12) and results["energy_std"] > 0
    np.testing.assert_allclose(forces, np.mean([f for _, f in singles], axis=0), rtol=1e-12, atol=1e-12)
    assert results["forces_std"].shape == (len(atoms), 3) and results["forces_std"].max() > 0
    assert results["forces_members"].shape == (3, len(atoms), 3)
    assert "stress_std" not in results  # no stress asked for a molecule
    assert atoms.calc.get_property("energy_std", atoms) == results["energy_std"]


def test_committee_results_of_known_numbers():
    members = [
        {"energy": e, "energies": np.array([e]), "forces": np.full((1, 3), e), "stress": np.full(6, e)}
        for e in (1.0, 2.0, 6.0)
    ]
    results = committee_results(members)
    assert results["energy"] == 3.0
    assert results["energy_std"] == pytest.approx(np.sqrt(14.0 / 3.0))  # population std of 1, 2, 6
    assert results["stress_std"] == pytest.approx(np.full(6, np.sqrt(14.0 / 3.0)))
    assert set(COMMITTEE_PROPERTIES) <= set(results)


def test_members_must_agree_on_species_and_cutoff(members):
    other = _model(0, species=["H", "C", "O"])
    with pytest.raises(ValueError, match="committee member 1"):
        EquimolCalculator([members[0], other])
    with pytest.raises(ValueError, match="empty list"):
        EquimolCalculator([])


def test_train_committee_over_seeds(shared_data, tmp_path, capsys):
    from equimol.train.config import validate_config
    from equimol.train.launch import train

    raw = tiny_training_config(shared_data, tmp_path, max_epochs=1, test_after_fit=False, committee_seeds=[3, 5])
    result = train(validate_config(raw))
    paths = [tmp_path / "run" / f"member_{seed}" / "model.pt" for seed in (3, 5)]
    assert result["model"] == [str(path) for path in paths] and all(path.is_file() for path in paths)
    atoms = molecule("CH3CH2OH")
    atoms.calc = EquimolCalculator(paths)
    atoms.get_forces()
    assert atoms.calc.results["energy_std"] > 0 and atoms.calc.results["forces_std"].max() > 0
    saved = [torch.load(path, weights_only=True)["model_config"]["seed"] for path in paths]
    assert saved == [3, 5]

    # the same committee again: refused without --overwrite, and --overwrite replaces every member's run
    config_path = tmp_path / "committee.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    for path in paths:  # a run product that the new runs (test_after_fit false) do not write again
        (path.parent / "test_metrics.json").write_text("{}")
    assert main(["train", str(config_path)]) == 2
    assert "member_3" in capsys.readouterr().err
    assert all((path.parent / "test_metrics.json").is_file() for path in paths)
    assert main(["train", str(config_path), "--overwrite"]) == 0
    assert all(path.is_file() and not (path.parent / "test_metrics.json").exists() for path in paths)


@pytest.mark.parametrize("seeds", [[], [1, 1]])
def test_committee_seeds_are_checked(shared_data, tmp_path, seeds):
    from equimol.train.config import ConfigError, validate_config

    raw = tiny_training_config(shared_data, tmp_path, committee_seeds=seeds)
    with pytest.raises(ConfigError, match="trainer.committee_seeds"):
        validate_config(raw)
