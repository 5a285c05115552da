"""Every code block of every tutorial page runs, in order, as a reader would run them.

The pages run one after the other (the order of the ``Tutorials`` navigation in ``mkdocs.yml``) in one
scratch folder laid out like a clone: ``configs/`` and ``examples/`` link to the repository's, and
``../shared/data`` to the shared data, so the pages' paths are the ones a reader types at the repository
root. Later tutorials use what earlier ones wrote (tutorial 2 relaxes with the model of tutorial 1).
``python`` blocks of a page share one namespace; ``bash`` blocks run with this environment's ``equimol``,
``python``, ``torchrun``, ``mpirun`` and ``lmp`` first on ``PATH``; a block with a ``title`` is written to
that file (see :mod:`docs_pages`). A page with no block, or an untitled block in another language, fails.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from docs_pages import DOCS, ROOT, RUNNABLE, code_blocks, nav_pages

TUTORIALS = [page for page in nav_pages("Tutorials") if page.name != "index.md"]
BLOCK_TIMEOUT_S = 600  # the longest block (the LAMMPS package's AOTInductor compile) takes about a minute


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A folder that looks like the repository root to the tutorials, with ``../shared`` beside it."""
    base = tmp_path_factory.mktemp("tutorials")
    (base / "shared").symlink_to(shared_data.parent, target_is_directory=True)
    root = base / "equimol"
    root.mkdir()
    for name in ("configs", "examples"):
        (root / name).symlink_to(ROOT / name, target_is_directory=True)
    return root


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run_bash(code: str, cwd: Path, where: str) -> None:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=cwd,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        pytest.fail(f"{where}: bash block exited {result.returncode}:\n{code}\n--- output (end) ---\n{output}")


@contextlib.contextmanager
def _inside(folder: Path):
    previous, threads = Path.cwd(), torch.get_num_threads()
    os.chdir(folder)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        os.chdir(previous)
        torch.set_num_threads(threads)


def run_page(page: Path, folder: Path) -> int:
    """Run the blocks of ``page`` in ``folder``; returns how many blocks ran or were written."""
    blocks = code_blocks(page.read_text(encoding="utf-8"))
    namespace: dict = {"__name__": "__tutorial__"}
    for block in blocks:
        where = f"{page.relative_to(ROOT)}:{block.line}"
        if block.title is not None:
            (folder / block.title).write_text(block.code, encoding="utf-8")
        elif block.language == "python":
            with _inside(folder):
                exec(compile(block.code, where, "exec"), namespace)  # noqa: S102 - our own docs
        elif block.language == "bash":
            _run_bash(block.code, folder, where)
        else:
            pytest.fail(f"{where}: a {block.language or 'plain'} block without a title; tutorials run {RUNNABLE}")
    return len(blocks)


def test_the_tutorials_are_the_nav_pages():
    """Every page in docs/tutorials/ is in the navigation (so none escapes this test), and there are seven."""
    on_disk = {page for page in (DOCS / "tutorials").glob("*.md") if page.name != "index.md"}
    assert on_disk == set(TUTORIALS), sorted(p.name for p in on_disk ^ set(TUTORIALS))
    assert len(TUTORIALS) == 7


@pytest.mark.parametrize("page", TUTORIALS, ids=[page.stem for page in TUTORIALS])
def test_tutorial_runs(page: Path, workspace: Path, capsys) -> None:
    ran = run_page(page, workspace)
    assert ran > 0, f"{page.name} has no code block"
