"""Every closed list of options that README.md, CONTRIBUTING.md, docs/ and configs/ spell out equals what
the code accepts, so a new backend, scheduler or format cannot be left out of the docs unnoticed.

Two kinds of lists are read:

* ``key: value  # a | b | c`` comments in ``configs/*.yaml`` and in the ``yaml`` blocks of the docs: the
  options before any other word must be the choices of that config key (``equimol.config_schema.describe``,
  whose choices come from the TP and many-body registries where a registry owns them);
* the prose lists of :data:`PROSE_LISTS`: the backticked names of a located passage, leaving out what
  stands in parentheses (explanations), against a registry, the schema, the CLI's choices or the
  reader's formats. Where order matters (the formats are asked in order), the order is compared too.

The docs site's configuration and CLI references are generated from the same sources (``docs/hooks``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from equimol.datasets.sources import FORMATS as FRAME_FORMATS

from equimol.cli.export import FORMATS as EXPORT_FORMATS
from equimol.config_schema import SECTIONS, describe
from equimol.config_sections import LOGGERS
from equimol.manybody import kinds as many_body_kinds
from equimol.tp.interface import known_backends

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]
NAME = r"[a-z][a-z0-9_-]*"


def choices(key: str) -> list[str]:
    """The choices ``describe()`` gives for a dotted config key (strings, as the docs write them)."""
    (entry,) = [entry for entry in describe() if entry["name"] == key]
    assert entry["choices"], f"{key} has no closed set of choices"
    return [str(choice) for choice in entry["choices"]]


def outside_parentheses(text: str) -> str:
    """``text`` without what stands inside (nested) parentheses."""
    kept, depth = [], 0
    for character in text:
        depth += character == "("
        if depth == 0:
            kept.append(character)
        depth -= character == ")" and depth > 0
    return "".join(kept)


def backticked(text: str) -> list[str]:
    """The backticked option names of a prose list, in order, explanations in parentheses left out."""
    return re.findall(rf"`({NAME})`", outside_parentheses(text))


def line_heads(pattern: str) -> Callable[[str], list[str]]:
    """Names at the start of the lines of a block (Markdown bullets or table rows)."""
    return lambda block: re.findall(pattern, block, flags=re.M)


@dataclass(frozen=True)
class ProseList:
    path: str  # relative to the repository
    passage: str  # regex; group 1 is the list (re.S)
    expected: Callable[[], list[str]]
    names: Callable[[str], list[str]] = backticked
    ordered: bool = False


PROSE_LISTS = [
    ProseList("README.md", r"A config has sections \((.*?)\) that map", lambda: list(SECTIONS)),
    ProseList(
        "equimol/cli/train.py",
        r"config with sections (.*?)\. ",
        lambda: list(SECTIONS),
        names=lambda text: [word.strip() for word in text.split(",")],
    ),
    ProseList(
        "docs/how-to/training.md",
        r"A config has these sections.*?:\n\n(.*?One more section, `\w+`)",
        lambda: list(SECTIONS),
        names=line_heads(r"^(?:- |One more section, )`(\w+)`"),
    ),
    ProseList("docs/how-to/training.md", r"- `optimizer` \(`name`: (.*?);", lambda: choices("optimizer.name")),
    ProseList("docs/how-to/training.md", r"- `scheduler` \(`name`: (.*?)\);\n", lambda: choices("scheduler.name")),
    ProseList("docs/how-to/training.md", r"`trainer.logger`, any of (.*?);", lambda: list(LOGGERS)),
    ProseList(
        "docs/how-to/training.md",
        r"Configs shipped: (.*?)\.\n",
        lambda: sorted(path.name for path in (ROOT / "configs").glob("*.yaml")),
        names=lambda text: sorted(re.findall(r"`([\w.]+\.yaml)`", outside_parentheses(text))),
    ),
    ProseList("docs/tutorials/backends.md", r"`model.tp_backend`: (.*?)\n\(", known_backends),
    ProseList(
        "docs/concepts/tensor-products.md",
        r"\| backend \| coupling .*?\n\|[- |]+\n((?:\|.*\n)+)",
        known_backends,
        names=line_heads(r"^\| `(\w+)` \|"),
    ),
    ProseList(
        "docs/concepts/mace-layer.md", r"with per-element weights: (.*?)\.\n", lambda: ["none", *many_body_kinds()]
    ),
    ProseList(
        "docs/concepts/spe.md",
        r"\*\*Modes\*\* \(`model.spe.mode`.*?\n\n((?:- .*\n(?:  .*\n)*)+)",
        lambda: choices("model.spe.mode"),
        names=line_heads(r"^- `(\w+)`:"),
    ),
    ProseList(
        "docs/concepts/model-files.md",
        r"`equimol export --format ([a-z|]+)`",
        lambda: [name for name in EXPORT_FORMATS if name != "pt"],
        names=lambda text: text.split("|"),
    ),
    ProseList(
        "docs/concepts/model-files.md",
        r"## Compiled files.*?\n\n((?:- .*\n(?:  .*\n)*)+)",
        lambda: [name for name in EXPORT_FORMATS if name != "pt"],
        names=line_heads(r"^- `(\w+)` \(`--format \1`\)"),
    ),
    ProseList(
        "CONTRIBUTING.md",
        r"The formats, in that order \(`FrameSource.name`\):\n(.*?)\. A format",
        lambda: [source.name for source in FRAME_FORMATS],
        ordered=True,
    ),
]


@pytest.mark.parametrize("listed", PROSE_LISTS, ids=lambda listed: f"{listed.path}:{listed.passage[:30]}")
def test_a_prose_list_names_every_option(listed: ProseList) -> None:
    text = (ROOT / listed.path).read_text(encoding="utf-8")
    found = re.search(listed.passage, text, flags=re.S)
    assert found, f"{listed.path}: the list ({listed.passage!r}) is gone; update PROSE_LISTS with the text"
    names, expected = listed.names(found.group(1)), listed.expected()
    assert len(names) == len(set(names)), f"{listed.path}: {names} names an option twice"
    if listed.ordered:
        assert names == list(expected), f"{listed.path} lists {names}; the code has {list(expected)}"
    else:
        assert set(names) == set(expected), f"{listed.path} lists {sorted(names)}; the code has {sorted(expected)}"


def yaml_comment_lists(text: str, where: str) -> list[tuple[str, str, list[str]]]:
    """``(where, dotted key, options)`` for each ``key: value  # a | b ...`` line of YAML ``text``."""
    found, stack = [], []  # stack: (indent, key) of the enclosing mappings
    for number, line in enumerate(text.splitlines(), 1):
        match = re.match(r"^(\s*)(\w+):([^#]*)#\s*(.*)$", line) or re.match(r"^(\s*)(\w+):()()", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = ".".join([*(name for _, name in stack), match.group(2)])
        if not match.group(3).strip():
            stack.append((indent, match.group(2)))
        options = re.match(rf"({NAME}(?:\s*\([^)]*\))?(?:\s*\|\s*{NAME}(?:\s*\([^)]*\))?)+)", match.group(4))
        if options:
            names = [re.sub(r"\s*\(.*", "", option).strip() for option in options.group(1).split("|")]
            found.append((f"{where}:{number}", key, names))
    return found


def all_yaml_comment_lists() -> list[tuple[str, str, list[str]]]:
    found = []
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        found += yaml_comment_lists(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for block in re.finditer(r"```yaml\n(.*?)```", text, flags=re.S):
            line = text[: block.start()].count("\n") + 1
            where = f"{path.relative_to(ROOT)} (yaml block at line {line})"
            found += yaml_comment_lists(block.group(1), where)
    return found


YAML_LISTS = all_yaml_comment_lists()


def test_the_yaml_comment_lists_are_found() -> None:
    """The scan sees the shipped configs' backend and many-body lists (a broken scan would pass vacuously)."""
    keys = {key for _, key, _ in YAML_LISTS}
    assert {"model.tp_backend", "model.many_body", "loss.kind"} <= keys, keys


@pytest.mark.parametrize("where,key,names", YAML_LISTS, ids=[f"{where}:{key}" for where, key, _ in YAML_LISTS])
def test_a_yaml_comment_lists_every_choice(where: str, key: str, names: list[str]) -> None:
    expected = choices(key)
    assert set(names) == set(expected), f"{where}: `{key}` lists {names}; the schema has {expected}"


def test_the_export_command_offers_every_compile_target() -> None:
    """``equimol export --target`` spells its choices (the CLI imports no torch to parse); they must be
    :data:`equimol.pt2_model.TARGETS`."""
    import argparse

    from equimol.cli import build_parser
    from equimol.pt2_model import TARGETS

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    target = next(a for a in commands.choices["export"]._actions if a.option_strings == ["--target"])
    assert tuple(target.choices) == TARGETS
