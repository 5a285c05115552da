"""MkDocs hook: the configuration reference is generated from the one config schema at build time.

``reference/configuration.md`` is not a file in ``docs/``: :func:`reference_page` writes it on every build
from :func:`equimol.config_schema.describe`, one row per key of every section (type, default, range or
choices, meaning), read from the same classes the config loader checks a file against. A key added to the
code appears on the page; ``tests/test_docs_config_reference.py`` compares the keys on the built page with
:func:`equimol.config_schema.accepted_keys`.
"""

from __future__ import annotations

from mkdocs.structure.files import File

PAGE = "reference/configuration.md"
INTRO = """# Configuration reference

Every key of every section of a training config, generated at build time from the config schema
(`equimol.config_schema.describe()`, the classes the loader checks a file against): a key added to the
code appears here. Give keys in the YAML file or as `section.key=value` overrides on the command line
([Training](../how-to/training.md#the-config)). A nested section such as `model.spe` is a mapping under its
parent key (`model: {spe: {enabled: true}}`, or `model.spe.enabled=true`). `auto` marks a key that may be
`auto`: filled in from the training data. `model.tp_options` depends on `model.tp_backend`: its rows name
the backend that takes each option.
"""


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _value(value) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`" if isinstance(value, str) else f"`{value!r}`"


def _limits(entry: dict) -> str:
    parts = []
    if entry.get("choices"):
        parts.append(", ".join(_value(choice) for choice in entry["choices"]))
    if entry.get("bounds_text"):
        parts.append(_cell(entry["bounds_text"]))
    if entry.get("auto"):
        parts.append("or `auto`")
    return "; ".join(parts)


def _meaning(entry: dict) -> str:
    text = _cell(entry.get("doc") or "")
    if entry.get("renamed_from"):
        text += " (formerly " + ", ".join(f"`{old}`" for old in entry["renamed_from"]) + ": still read)"
    return text


def reference_page(entries: list[dict]) -> str:
    """The page: one table per section, one row per key, in the schema's order."""
    sections: dict[str, list[dict]] = {}
    for entry in entries:
        sections.setdefault(entry["section"], []).append(entry)
    lines = [INTRO]
    for section, rows in sections.items():
        by_backend = any("backend" in entry for entry in rows)
        backend_head = "backend | " if by_backend else ""
        lines += [
            f"## `{section}`",
            "",
            f"| key | {backend_head}type | default | range or choices | meaning |",
            "| --- |" + (" --- |" if by_backend else "") + " --- | --- | --- | --- |",
        ]
        for entry in rows:
            backend = f"`{entry['backend']}` | " if by_backend else ""
            lines.append(
                f"| `{entry['name']}` | {backend}`{_cell(entry['type'])}` | {_cell(_value(entry['default']))} | "
                f"{_limits(entry)} | {_meaning(entry)} |"
            )
        lines.append("")
    return "\n".join(lines)


def on_files(files, config):
    from equimol.config_schema import describe

    files.append(File.generated(config, PAGE, content=reference_page(describe())))
    return files
