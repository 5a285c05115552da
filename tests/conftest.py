"""Shared pytest fixtures: where the read-only shared datasets live, an isolated cache, ``equimol bench`` runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

# Triton reads TRITON_INTERPRET when kernels are decorated, and the first import of triton may come
# from any test module (or torch itself): set it before anything is imported, on machines without a GPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# CI clones the repository next to a read-only copy of shared/; EQUIMOL_SHARED_DATA overrides.
SHARED_DATA = Path(os.environ.get("EQUIMOL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``shared/data`` (3BPA, OC20, OC22, extra DFT sets); fails loudly if it is missing."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared datasets not found at {SHARED_DATA}; set EQUIMOL_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def isolated_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point equimol's cache (fitted CP factors, dataset statistics) at a per-session folder."""
    path = tmp_path_factory.mktemp("equimol-cache")
    previous = os.environ.get("EQUIMOL_CACHE_DIR")
    os.environ["EQUIMOL_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("EQUIMOL_CACHE_DIR", None)
    else:
        os.environ["EQUIMOL_CACHE_DIR"] = previous


@pytest.fixture
def bench_record(tmp_path: Path):
    """``bench_record(*args)`` runs ``equimol bench *args --json FILE``, asserts exit code 0 and returns the record."""
    from equimol.cli import main

    def run(*args: str) -> dict:
        path = tmp_path / "bench.json"
        assert main(["bench", *args, "--json", str(path)]) == 0
        return json.loads(path.read_text())

    return run


@pytest.fixture(scope="session")
def docs_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation site built once per session with ``mkdocs build --strict`` (``tests/test_docs_*.py``).

    Strict: a broken link, a page missing from the navigation's files, a docstring reference that does not
    resolve or any other MkDocs warning fails the build, and with it every test that uses the site.
    """
    import subprocess
    import sys

    site = tmp_path_factory.mktemp("docs") / "site"
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        pytest.fail(f"mkdocs build --strict failed ({result.returncode}):\n{result.stderr[-6000:]}")
    return site
