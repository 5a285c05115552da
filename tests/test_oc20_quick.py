"""configs/oc20_quick.yaml splits the shipped OC20 relaxations by trajectory, never by frame."""

from __future__ import annotations

from pathlib import Path

import ase.io
import yaml

from equimol.nn.embedding import parse_species

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "oc20_quick.yaml"


def test_split_is_by_trajectory_and_held_out_elements_are_trained(shared_data):
    config = yaml.safe_load(CONFIG.read_text())
    data = config["data"]
    splits = {name: [data[name]] if isinstance(data[name], str) else data[name] for name in ("train", "val", "test")}
    assert not data.get("val_fraction") and not data.get("test_fraction"), "a fraction would split by frame"
    files = [path for paths in splits.values() for path in paths]
    assert len(files) == len(set(files)) == 16  # each shipped trajectory in exactly one split
    assert data["forces_on"] == "free"
    elements = {
        name: set().union(*(set(ase.io.read(shared_data / path, 0).get_atomic_numbers().tolist()) for path in paths))
        for name, paths in splits.items()
    }
    assert elements["val"] <= elements["train"] and elements["test"] <= elements["train"]
    assert set(parse_species(config["model"]["species"])) == set().union(*elements.values())
