"""The configuration reference lists exactly the keys the config loader accepts.

The page is generated at build time from :func:`equimol.config_schema.describe`
(``docs/hooks/config_reference.py``). These tests read the keys off the built HTML and hold them against
the loader two ways: the loader's accepted set (:func:`equimol.config_schema.accepted_keys`) must equal the
page's, and :func:`equimol.train.config.validate_config` itself must accept every key on the page (set to
its default) and refuse one that is not there. A key added to the code but not rendered (a section the
generator skips, a nested mapping it does not walk) fails the first; a page row the loader does not know
fails the second.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from equimol.train.config import validate_config

from equimol.config_schema import accepted_keys, describe
from equimol.errors import ConfigError

# the first cell of each row of the reference's tables: <td><code>section.key</code></td>
ROW_KEY = re.compile(r"<tr>\s*<td><code>([a-z_][\w.]*)</code></td>")


def page_keys(site: Path) -> set[str]:
    text = (site / "reference" / "configuration" / "index.html").read_text(encoding="utf-8")
    return {html.unescape(key) for key in ROW_KEY.findall(text)}


def minimal_config(shared_data: Path) -> dict:
    return {
        "model": {"species": ["H", "C", "N", "O"], "avg_num_neighbors": 10.0},
        "data": {"train": str(shared_data / "3bpa" / "train_300K.xyz"), "val_fraction": 0.1},
    }


def test_reference_lists_every_accepted_key(docs_site: Path) -> None:
    on_page, accepted = page_keys(docs_site), accepted_keys()
    assert len(on_page) > 100
    assert not accepted - on_page, f"keys the loader accepts that the reference lacks: {sorted(accepted - on_page)}"
    assert not on_page - accepted, f"keys on the reference the loader does not list: {sorted(on_page - accepted)}"


def test_loader_accepts_every_key_on_the_page(docs_site: Path, shared_data: Path) -> None:
    """Each key of the page, set alone to its documented default, passes the loader's unknown-key check."""
    on_page = page_keys(docs_site)
    probed = set()
    for entry in describe():
        if entry["name"] not in on_page:
            continue
        config = minimal_config(shared_data)
        node = config
        for part in entry["section"].split("."):
            node = node.setdefault(part, {})
        node[entry["key"]] = entry["default"]
        if "backend" in entry:
            config["model"]["tp_backend"] = entry["backend"]
        try:
            validate_config(config)
        except ConfigError as error:  # another rule may object to a lone default; an unknown key may not
            assert "unknown key" not in str(error), f"{entry['name']}: {error}"
        probed.add(entry["name"])
    assert probed == on_page


def test_loader_refuses_a_key_not_on_the_page(docs_site: Path, shared_data: Path) -> None:
    """A key absent from the page is refused by the loader, naming it: the compared set is the one enforced."""
    assert "trainer.max_epoch" not in page_keys(docs_site)
    config = minimal_config(shared_data)
    config["trainer"] = {"max_epoch": 3}
    with pytest.raises(ConfigError, match=r"trainer\.max_epoch"):
        validate_config(config)
