"""MkDocs hook: the configuration reference is generated from the config classes at build time.

``reference/configuration.md`` is not a file in ``docs/``: :func:`reference_page` writes it on every build
from :func:`config_entries`, one row per key of every section (type, default, range or choices,
meaning), so a key added to the code appears on the page. ``tests/test_docs_config_reference.py``
compares the keys on the page with the keys the loader accepts.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Iterator

from mkdocs.structure.files import File

PAGE = "reference/configuration.md"
# a dataclass field line with a trailing comment: "    name: type = default  # meaning"
FIELD_COMMENT = re.compile(r"^\s+(\w+): [^#\n]*?#\s*(.+)$", re.M)
# a key of the model docstring's YAML example: "      name: value   # meaning"
YAML_COMMENT = re.compile(r"^\s+(\w+): [^#\n]*#\s*(.+)$", re.M)


def _sections() -> list[tuple[str, type]]:
    from equimol.datasets.config import DataConfig
    from equimol.train import config as train_config
    from equimol.train.stage_two import StageTwoConfig

    from equimol.models.config import ModelConfig, SPEConfig

    return [
        ("model", ModelConfig),
        ("model.spe", SPEConfig),
        ("data", DataConfig),
        ("loss", train_config.LossConfig),
        ("loss.stage_two", StageTwoConfig),
        ("optimizer", train_config.OptimizerConfig),
        ("scheduler", train_config.SchedulerConfig),
        ("trainer", train_config.TrainerConfig),
        ("finetune", train_config.FinetuneConfig),
    ]


def _comments(cls: type) -> dict[str, str]:
    comments = dict(FIELD_COMMENT.findall(inspect.getsource(cls)))
    if cls.__name__ == "ModelConfig":  # the model keys are explained in the module docstring's example
        module_doc = inspect.getmodule(cls).__doc__ or ""
        comments = {**dict(YAML_COMMENT.findall(module_doc)), **comments}
    return comments


def _type_name(annotation) -> str:
    if isinstance(annotation, type) and typing.get_origin(annotation) is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


def _default(field: dataclasses.Field):
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def config_entries() -> Iterator[dict]:
    """One mapping per key: ``name`` (``section.key``), ``type``, ``default``, ``choices``, ``bounds_text``, ``doc``."""
    from equimol.train.config import CHOICES

    for section, cls in _sections():
        hints = typing.get_type_hints(cls)
        comments = _comments(cls)
        for field in dataclasses.fields(cls):
            name = f"{section}.{field.name}"
            choices = CHOICES.get(name)
            yield {
                "section": section,
                "key": field.name,
                "name": name,
                "type": _type_name(hints[field.name]),
                "default": _default(field),
                "choices": list(choices) if choices else None,
                "bounds_text": "",
                "doc": comments.get(field.name, ""),
            }


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _value(value) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value!r}`" if not isinstance(value, str) else f"`{value}`"


def reference_page(entries: list[dict]) -> str:
    """The page: one table per section, one row per key, in the order the classes declare them."""
    sections: dict[str, list[dict]] = {}
    for entry in entries:
        sections.setdefault(entry["section"], []).append(entry)
    lines = [
        "# Configuration reference",
        "",
        "Every key of every section of a training config, generated at build time from the config classes",
        "(`docs/hooks/config_reference.py`): a key added to the code appears here. Give keys in the YAML file",
        "or as `section.key=value` overrides on the command line ([Training](../how-to/training.md#the-config)).",
        "A nested section such as `model.spe` is a mapping under its parent key (`model: {spe: {enabled: true}}`,",
        "or `model.spe.enabled=true`).",
        "",
    ]
    for section, rows in sections.items():
        lines += [
            f"## `{section}`",
            "",
            "| key | type | default | range or choices | meaning |",
            "| --- | --- | --- | --- | --- |",
        ]
        for entry in rows:
            limits = ", ".join(_value(choice) for choice in entry["choices"]) if entry.get("choices") else ""
            limits = limits or _cell(entry.get("bounds_text") or "")
            lines.append(
                f"| `{entry['name']}` | `{_cell(entry['type'])}` | {_cell(_value(entry['default']))} | "
                f"{limits} | {_cell(entry['doc'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def on_files(files, config):
    files.append(File.generated(config, PAGE, content=reference_page(list(config_entries()))))
    return files
