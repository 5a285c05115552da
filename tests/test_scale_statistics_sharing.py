"""In a distributed launch only the first process of a machine computes the statistics; the others read its file."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from equimol.datasets import statistics as statistics_module
from equimol.datasets import statistics_sharing
from equimol.datasets.atoms_dataset import AtomsDataset, LabelSettings
from equimol.datasets.statistics import cached_statistics, compute_statistics, statistics_key
from equimol.datasets.statistics_sharing import waits_for_first_process

LAUNCH_VARIABLES = ("WORLD_SIZE", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_LOCALID")
SPLIT = np.arange(0, 120)


@pytest.fixture(scope="module")
def three_bpa(shared_data: Path) -> AtomsDataset:
    return AtomsDataset([shared_data / "3bpa" / "train_300K.xyz"], LabelSettings(radial_cutoff=5.0))


@pytest.fixture()
def launch(monkeypatch: pytest.MonkeyPatch):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def set_launch(**variables: int) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, str(value))

    return set_launch


def test_who_waits(launch) -> None:
    assert not waits_for_first_process()  # a plain single process
    launch(WORLD_SIZE=4, LOCAL_RANK=0)
    assert not waits_for_first_process()
    launch(LOCAL_RANK=3)
    assert waits_for_first_process()
    launch(WORLD_SIZE=1)
    assert not waits_for_first_process()  # LOCAL_RANK without a multi-process launch


def test_who_waits_under_srun(launch) -> None:
    launch(SLURM_NTASKS=8, SLURM_LOCALID=5)
    assert waits_for_first_process()
    launch(SLURM_LOCALID=0)
    assert not waits_for_first_process()


def test_other_processes_take_the_first_processs_statistics(
    three_bpa: AtomsDataset, tmp_path: Path, launch, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = compute_statistics(three_bpa, SPLIT, sample_size=30)
    path = tmp_path / f"{statistics_key(three_bpa, SPLIT, 30)}.json"
    launch(WORLD_SIZE=2, LOCAL_RANK=1)

    def must_not_compute(*args, **kwargs):
        raise AssertionError("a process other than the machine's first computed the statistics")

    monkeypatch.setattr(statistics_module, "compute_statistics", must_not_compute)
    (tmp_path / "half.json").write_text("{")  # unreadable files are passed over, not taken
    writer = threading.Timer(0.5, lambda: path.write_text(expected.to_json()))  # the first process, later
    writer.start()
    try:
        shared = cached_statistics(three_bpa, SPLIT, tmp_path, sample_size=30)
    finally:
        writer.cancel()
    assert shared == expected


def test_a_process_that_waits_too_long_computes_itself(
    three_bpa: AtomsDataset, tmp_path: Path, launch, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch(WORLD_SIZE=2, LOCAL_RANK=1)
    monkeypatch.setattr(statistics_sharing, "WAIT_SECONDS", 0.3)
    computed = cached_statistics(three_bpa, SPLIT, tmp_path, sample_size=30)
    assert computed == compute_statistics(three_bpa, SPLIT, sample_size=30)
    assert (tmp_path / f"{statistics_key(three_bpa, SPLIT, 30)}.json").exists()  # and caches them


def test_the_first_process_does_not_wait(
    three_bpa: AtomsDataset, tmp_path: Path, launch, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch(WORLD_SIZE=2, LOCAL_RANK=0)

    def must_not_wait(*args, **kwargs):
        raise AssertionError("the machine's first process waited")

    monkeypatch.setattr(statistics_module, "wait_for_file", must_not_wait)
    assert cached_statistics(three_bpa, SPLIT, tmp_path, sample_size=30).sample_size == 30
