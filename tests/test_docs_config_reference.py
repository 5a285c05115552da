"""The configuration reference lists exactly the keys the config loader accepts.

The page is generated at build time (``docs/hooks/config_reference.py``); this test reads the keys off
the built HTML and compares them with the loader's own tables, so a key added to the code but missing
from the page (a section the generator skips, a nested mapping it does not walk) fails here.
"""

from __future__ import annotations

import dataclasses
import html
import re
import typing
from pathlib import Path

import pytest
from equimol.train.config import ConfigError, validate_config

# the first cell of each row of the reference's tables: <td><code>section.key</code></td>
ROW_KEY = re.compile(r"<tr>\s*<td><code>([a-z_][\w.]*)</code></td>")


def page_keys(site: Path) -> set[str]:
    text = (site / "reference" / "configuration" / "index.html").read_text(encoding="utf-8")
    return {html.unescape(key) for key in ROW_KEY.findall(text)}


def loader_keys() -> set[str]:
    """Every dotted key :func:`equimol.train.config.validate_config` accepts, from the classes it checks against."""
    from equimol.datasets.config import DataConfig
    from equimol.train.config import SECTION_CLASSES
    from equimol.train.stage_two import StageTwoConfig

    from equimol.models.config import ModelConfig, SPEConfig

    classes = {**SECTION_CLASSES, "data": DataConfig, "model": ModelConfig}
    classes.update({"model.spe": SPEConfig, "loss.stage_two": StageTwoConfig})
    keys = set()
    for section, cls in classes.items():
        keys |= {f"{section}.{name}" for name in typing.get_type_hints(cls) if name in _fields(cls)}
    return keys


def _fields(cls: type) -> set[str]:
    return {field.name for field in dataclasses.fields(cls)}


def test_reference_lists_every_accepted_key(docs_site: Path) -> None:
    on_page, accepted = page_keys(docs_site), loader_keys()
    assert len(on_page) > 100
    assert not accepted - on_page, f"keys the loader accepts that the reference lacks: {sorted(accepted - on_page)}"
    assert not on_page - accepted, f"keys on the reference the loader refuses: {sorted(on_page - accepted)}"


def test_loader_refuses_a_key_not_on_the_page(docs_site: Path, shared_data: Path) -> None:
    """The set compared above is what the loader enforces: a key absent from the page is refused, naming it."""
    assert "trainer.max_epoch" not in page_keys(docs_site)
    config = {
        "model": {"species": ["H"], "avg_num_neighbors": 1.0},
        "data": {"train": str(shared_data / "3bpa" / "train_300K.xyz"), "val_fraction": 0.1},
        "trainer": {"max_epoch": 3},
    }
    with pytest.raises(ConfigError, match=r"trainer\.max_epoch"):
        validate_config(config)
