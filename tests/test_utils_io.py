"""equimol.utils.io: atomic writes (whole file or none) and the cache-folder rule."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from equimol.utils.io import atomic_write, cache_root


def leftovers(folder):
    return sorted(path.name for path in folder.iterdir() if path.name.endswith(".tmp"))


def test_atomic_write_bytes_text_and_torch(tmp_path):
    with atomic_write(tmp_path / "sub" / "a.bin") as handle:
        handle.write(b"\x00\x01")
    with atomic_write(tmp_path / "a.txt", "w") as handle:
        handle.write("Å\n")
    with atomic_write(tmp_path / "a.pt") as handle:
        torch.save({"x": torch.arange(3)}, handle)
    assert (tmp_path / "sub" / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "Å\n"
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["x"], torch.arange(3))
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "sub") == []


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_write(target) as handle:
        handle.write(b"half of the new")
        assert target.read_bytes() == b"old"  # nothing visible before the rename
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_atomic_write_honours_the_umask_and_rejects_other_modes(tmp_path):
    previous = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "f.txt", "w") as handle:
            handle.write("x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
    with pytest.raises(ValueError, match="mode"), atomic_write(tmp_path / "g", "a"):
        pass


def test_cache_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("EQUIMOL_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "explicit"
    monkeypatch.setenv("EQUIMOL_CACHE_DIR", "")
    assert cache_root() == tmp_path / "xdg" / "equimol"
    monkeypatch.delenv("EQUIMOL_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "equimol"


def test_statistics_cache_follows_xdg(monkeypatch, tmp_path):
    from equimol.datasets.statistics import default_cache_dir

    monkeypatch.delenv("EQUIMOL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "equimol" / "dataset_statistics"
