"""The documentation site builds in strict mode and holds the pages the issue asks for.

The build itself is the ``docs_site`` fixture (``tests/conftest.py``): ``mkdocs build --strict`` fails on
a broken link, a missing page or an unresolved docstring reference. These tests check what it built.
"""

from __future__ import annotations

import re
from pathlib import Path

from docs_pages import DOCS, nav_pages

PAGES = {
    "getting-started/index.html": "Getting started",
    "tutorials/train-3bpa/index.html": "Train on 3BPA",
    "reference/configuration/index.html": "Configuration reference",
    "reference/cli/index.html": "Command line",
    "reference/api/tp/index.html": "equimol.tp",
    "concepts/tensor-products/index.html": "The TP interface",
    "benchmarks/speed/index.html": "Speed",
    "benchmarks/results/index.html": "All committed results",
}


def test_site_has_every_page(docs_site: Path) -> None:
    for page, title in PAGES.items():
        text = (docs_site / page).read_text(encoding="utf-8")
        assert title in re.search(r"<h1[^>]*>(.*?)</h1>", text, re.S).group(1), page


def test_every_markdown_page_is_in_the_navigation() -> None:
    listed = {page for section in ("Tutorials", "Concepts", "How-to", "Benchmarks") for page in nav_pages(section)}
    for folder in ("tutorials", "concepts", "how-to"):
        for page in (DOCS / folder).glob("*.md"):
            assert page in listed, f"{page.relative_to(DOCS)} is not in mkdocs.yml's nav"


def test_api_pages_render_docstrings(docs_site: Path) -> None:
    """mkdocstrings rendered the objects (not an empty page), and the docstrings' reST maths became MathJax input."""
    for module in ("tp", "nn", "models", "calculator", "datasets", "train", "kernels"):
        text = (docs_site / "reference" / "api" / module / "index.html").read_text(encoding="utf-8")
        assert text.count('class="doc doc-heading"') >= 1, module
        assert ".. math::" not in text, module


def test_benchmark_tables_come_from_the_json(docs_site: Path) -> None:
    """The speed page's tables are rendered from benchmarks/*.json and name the machine; no marker is left."""
    text = (docs_site / "benchmarks" / "speed" / "index.html").read_text(encoding="utf-8")
    assert "<!-- benchmark:" not in text
    assert "AMD EPYC (2 cores)" in text and "forward+backward (ms)" in text
    assert (docs_site / "benchmarks" / "img" / "tp_speed_cpu.png").stat().st_size > 0


def test_mathjax_is_served_by_the_site(docs_site: Path) -> None:
    """No CDN: the MathJax script is a file of the site, and no page loads a script from another host."""
    assert (docs_site / "javascripts" / "mathjax" / "tex-svg.js").stat().st_size > 1_000_000
    for page in docs_site.rglob("*.html"):
        scripts = re.findall(r'<script[^>]+src="([^"]+)"', page.read_text(encoding="utf-8"))
        assert not [src for src in scripts if src.startswith(("http:", "https:", "//"))], page
