"""The docs' pages as the tests see them: the navigation of ``mkdocs.yml`` and the fenced code blocks of a page.

A tutorial's blocks run in order (``tests/test_docs_tutorials.py``): a block whose info string has a
``title="NAME"`` is a file the page shows (a config, an input script) and is written to ``NAME``; an
untitled ``python`` block runs as Python and an untitled ``bash`` block through bash. Any other untitled
block is refused, so that no code on a tutorial page goes unchecked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# a fence at the start of a line: ``` or more backticks, the info string, the body, the same fence
FENCE = re.compile(r"^(?P<fence>`{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)
TITLE = re.compile(r'title="([^"]+)"')
RUNNABLE = ("python", "bash")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, its ``title`` (a file name) or None, its text and first line."""

    language: str
    title: str | None
    code: str
    line: int


def code_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown page, in order."""
    blocks = []
    for match in FENCE.finditer(text):
        info = match.group("info").strip()
        language = info.split()[0] if info else ""
        title = TITLE.search(info)
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(language, title.group(1) if title else None, match.group("body"), line))
    return blocks


def nav_pages(section: str) -> list[Path]:
    """The pages of a top-level section of the ``mkdocs.yml`` navigation, in order (``Tutorials``)."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    for entry in config["nav"]:
        if isinstance(entry, dict) and section in entry:
            pages = []
            for item in entry[section]:
                page = item if isinstance(item, str) else next(iter(item.values()))
                pages.append(DOCS / page)
            return pages
    raise KeyError(f"mkdocs.yml has no nav section {section!r}")
