"""Which process of a launch checks the run folder (:func:`equimol.train.run.is_first_process`).

Each case is the environment a launcher gives one process. torchrun sets RANK, LOCAL_RANK and
GROUP_RANK but no NODE_RANK; the first process of the second machine (RANK 2, LOCAL_RANK 0) once took
itself for the first of the launch, refused the folder the real first process had just written, and
the other machine's processes waited in their first collective forever.
"""

from __future__ import annotations

import pytest
from equimol.train.run import is_first_process

NAMES = ("RANK", "LOCAL_RANK", "GROUP_RANK", "NODE_RANK", "SLURM_PROCID", "WORLD_SIZE")


@pytest.mark.parametrize(
    ("environment", "first"),
    [
        ({}, True),  # alone
        ({"RANK": "0", "LOCAL_RANK": "0", "GROUP_RANK": "0", "WORLD_SIZE": "4"}, True),  # torchrun, machine 0
        ({"RANK": "2", "LOCAL_RANK": "0", "GROUP_RANK": "1", "WORLD_SIZE": "4"}, False),  # torchrun, machine 1
        ({"RANK": "1", "LOCAL_RANK": "1", "GROUP_RANK": "0", "WORLD_SIZE": "4"}, False),
        ({"LOCAL_RANK": "1", "NODE_RANK": "0"}, False),  # Lightning's own launcher, second process
        ({"LOCAL_RANK": "1", "NODE_RANK": "0", "SLURM_PROCID": "0"}, False),  # ... inside a SLURM batch job
        ({"SLURM_PROCID": "0", "LOCAL_RANK": "0"}, True),  # srun task 0
        ({"SLURM_PROCID": "5"}, False),
        ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),  # Lightning's launcher on a second machine
    ],
)
def test_first_process_of_each_launch(monkeypatch: pytest.MonkeyPatch, environment: dict, first: bool) -> None:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert is_first_process() is first
