"""Benchmarks run from a fresh clone: no imports from ``tests/``, no fixed scratch paths, results kept unless asked."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _common():
    spec = importlib.util.spec_from_file_location("benchmarks_common", BENCHMARKS / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_result_is_replaced_only_with_overwrite(tmp_path, capsys):
    common = _common()
    stem = tmp_path / "result"
    common.check_stem(stem, overwrite=False)  # nothing there yet
    (tmp_path / "result.md").write_text("committed\n")
    with pytest.raises(SystemExit) as stopped:
        common.check_stem(stem, overwrite=False)
    assert stopped.value.code == 2 and "result.md exists; give --overwrite" in capsys.readouterr().err
    common.check_stem(stem, overwrite=True)


def test_equimol_comes_from_the_running_environment():
    assert Path(_common().equimol_command()) == Path(sys.executable).with_name("equimol")


@pytest.mark.parametrize("script", sorted(BENCHMARKS.glob("*.py")) + sorted(BENCHMARKS.glob("*.sh")), ids=str)
def test_no_test_imports_fixed_scratch_paths_or_venv_commands(script: Path):
    code = "\n".join(line for line in script.read_text().splitlines() if not line.lstrip().startswith("#"))
    assert "sys.path.insert" not in code and "sys.path.append" not in code
    assert not re.search(r"[\"'= ]/tmp/", code), "a fixed /tmp path: use tempfile (mktemp -d) or --out"
    assert not re.search(r"\.venv/bin/(equimol|python)\"|\"\.venv\" / \"bin\"|/ \"\.venv/bin", code)
