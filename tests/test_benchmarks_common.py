"""Benchmarks run from a fresh clone: no imports from ``tests/``, no fixed scratch paths, results kept unless asked."""

from __future__ import annotations

import argparse
import importlib.util
import json
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

    def parse(*extra: str):
        return common.parse_stem(argparse.ArgumentParser(), "unused", ["--out", str(stem), *extra])

    assert parse().out == str(stem)  # nothing there yet
    (tmp_path / "result.md").write_text("committed\n")
    with pytest.raises(SystemExit) as stopped:
        parse()
    assert stopped.value.code == 2 and "result.md exists; give --overwrite" in capsys.readouterr().err
    assert parse("--overwrite").overwrite
    assert common.parse_stem(argparse.ArgumentParser(), "name", []).out.endswith("benchmarks/name")


def test_a_failing_section_is_recorded_and_the_record_rewritten_after_each_section(tmp_path):
    common = _common()
    path = tmp_path / "record.json"
    run = common.SectionRecord({"machine": {"device": "cpu"}}, path)
    assert run.section("first", lambda count: list(range(count)), 2) == [0, 1]
    assert json.loads(path.read_text())["sections"]["first"]["result"] == [0, 1]  # written before the next one
    assert run.section("broken", lambda: 1 / 0) is None
    assert run.section("after", dict) == {}
    sections = json.loads(path.read_text())["sections"]
    assert sections["broken"]["error"] == "ZeroDivisionError: division by zero"
    assert "1 / 0" in sections["broken"]["traceback"] and sections["broken"]["seconds"] >= 0
    assert list(sections) == ["first", "broken", "after"]


def test_result_files_are_named_after_the_gpu_else_the_device():
    common = _common()
    assert common.device_tag({"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3"}) == "NVIDIA_H100_80GB_HBM3"
    assert common.device_tag({"device": "cpu", "cpu": "AMD EPYC"}) == "cpu"


def test_equimol_comes_from_the_running_environment():
    assert Path(_common().equimol_command()) == Path(sys.executable).with_name("equimol")


@pytest.mark.parametrize("script", sorted(BENCHMARKS.glob("*.py")) + sorted(BENCHMARKS.glob("*.sh")), ids=str)
def test_no_test_imports_fixed_scratch_paths_or_venv_commands(script: Path):
    code = "\n".join(line for line in script.read_text().splitlines() if not line.lstrip().startswith("#"))
    assert "sys.path.insert" not in code and "sys.path.append" not in code
    assert not re.search(r"[\"'= ]/tmp/", code), "a fixed /tmp path: use tempfile (mktemp -d) or --out"
    assert not re.search(r"\.venv/bin/(equimol|python)\"|\"\.venv\" / \"bin\"|/ \"\.venv/bin", code)
