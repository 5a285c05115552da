"""MkDocs hook: MathJax is served from the site itself, and the docstrings' reST maths and roles render.

* MathJax 3's single-file SVG build (``tex-svg.js``: TeX input, SVG output, fonts as paths, so no font
  files) comes from the ``django-static-mathjax`` package of the ``docs`` extra and is added to the
  site as ``javascripts/mathjax/tex-svg.js``: nothing is loaded from a CDN, the site renders offline.
* The docstrings (API pages) write maths as reST, ``.. math::`` blocks and ``:math:`...``` roles, and
  cross-references as ``:class:`...``` and friends. On those pages the blocks become arithmatex
  display maths (typeset by MathJax like the pages' own ``$$...$$``) and the roles plain code.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

MATHJAX_FILE = "tex-svg.js"
# ".. math::" followed by an indented block, which Markdown renders as a code block (highlighted or not)
MATH_BLOCK = re.compile(
    r"<p>\.\. math::</p>\s*(?:<div class=\"highlight\">)?<pre>(?:<span></span>)?<code>(.*?)</code></pre>(?:</div>)?",
    re.S,
)
# ".. math:: formula" with the formula on the same line, possibly continued in the same paragraph
MATH_INLINE_BLOCK = re.compile(r"<p>\.\. math::[ \t]+(\S.*?)</p>", re.S)
MATH_ROLE = re.compile(r":math:<code>(.*?)</code>", re.S)
XREF_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|obj|exc):<code>~?(.*?)</code>")


def mathjax_source() -> Path:
    import mathjax  # django-static-mathjax

    path = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / MATHJAX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall the docs extra (pip install -e '.[docs]')")
    return path


def on_files(files, config):
    files.append(File.generated(config, f"javascripts/mathjax/{MATHJAX_FILE}", abs_src_path=str(mathjax_source())))
    return files


def _display(match: re.Match) -> str:
    return f'<div class="arithmatex">\\[{match.group(1).strip()}\\]</div>'


def _inline(match: re.Match) -> str:
    return f'<span class="arithmatex">\\({match.group(1)}\\)</span>'


def rest_to_html(content: str) -> str:
    """reST maths and cross-reference roles, as Markdown rendered them, turned into MathJax input and code."""
    content = MATH_BLOCK.sub(_display, content)
    content = MATH_INLINE_BLOCK.sub(_display, content)
    content = MATH_ROLE.sub(_inline, content)
    return XREF_ROLE.sub(lambda m: f"<code>{m.group(1)}</code>", content)


def on_page_content(content, page, config, files):
    if page.file.src_uri.startswith("reference/api/"):
        return rest_to_html(content)
    return content
