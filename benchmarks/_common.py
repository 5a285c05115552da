"""Pieces every benchmark report shares: the Markdown table and the ``stem.json`` + ``stem.md`` pair.

Benchmarks run as scripts (``.venv/bin/python benchmarks/<name>.py``), so their own folder is on
``sys.path`` and they import this module as ``_common``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """Lines of a Markdown table: the header, the ``---`` rule, one line per row (cells as given)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def write_markdown(stem: str | Path, lines: Sequence[str]) -> None:
    """Write ``stem.md`` from ``lines`` (one trailing newline) and say so with the JSON beside it."""
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {stem}.json and {stem}.md")


def write_json(stem: str | Path, record: dict) -> None:
    """Write ``record`` to ``stem.json`` (indented one space, trailing newline)."""
    Path(f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
