"""Run many ``equimol`` command lines as separate processes, paying for the heavy imports once.

``python tests/cli_runner.py CASES.json PARALLEL`` imports the CLI and what its commands import
(torch, Lightning, ASE, e3nn), then forks one child process per case, ``PARALLEL`` at a time. Each
child changes into the case's folder, sets the case's environment, sends its stdout/stderr to
files and runs :func:`equimol.cli.main` exactly as the console script does (``sys.exit(main())``);
its exit status is the command's. An exception that escapes ``main`` prints its traceback and
exits 1, as the console script would. Prints ``{case name: exit status}`` as JSON.

CASES.json: a list of ``{"name", "argv", "cwd", "env", "stdout", "stderr", "timeout"}`` (seconds, 0: none), and
optionally ``"file_size_limit"`` (bytes: the child's ``RLIMIT_FSIZE``, a full disk).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import traceback

_PRELOADED = (
    "torch",
    "lightning",
    "ase.io",
    "ase.db",
    "equimol.train.run",
    "equimol.train.config",
    "equimol.train.evaluate",
    "equimol.export",
    "equimol.calculator",
    "equimol.datasets.datamodule",
    "equimol.microbench.tp",
    "equimol.microbench.model",
)


def _child(case: dict, main) -> int:
    signal.alarm(int(case.get("timeout", 0)))  # a hanging command dies by SIGALRM (exit status -14)
    if case.get("file_size_limit"):  # a full disk: writes beyond the limit fail with EFBIG
        import resource

        from lightning.fabric.plugins.environments import MPIEnvironment

        # Lightning's MPI detection initialises MPI, whose shared-memory files the limit would also cut short
        # (a full disk leaves /dev/shm alone): one process, no MPI, as without mpi4py installed
        MPIEnvironment.detect = staticmethod(lambda: False)

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (case["file_size_limit"], case["file_size_limit"]))
    os.chdir(case["cwd"])
    os.environ.update(case["env"])
    for fd, name in ((1, case["stdout"]), (2, case["stderr"])):
        target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = ["equimol", *case["argv"]]
    try:
        return main(case["argv"])
    except SystemExit as done:  # argparse: --help, usage errors
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001 - what the console script would show: a traceback, status 1
        traceback.print_exc()
        return 1


def run_cases(cases: list[dict], parallel: int) -> dict[str, int]:
    """Fork one child per case (``parallel`` at a time); ``{name: exit status}``."""
    import equimol.cli

    equimol.cli.build_parser()
    for module in _PRELOADED:
        importlib.import_module(module)
    statuses: dict[str, int] = {}
    running: dict[int, str] = {}
    pending = list(cases)
    while pending or running:
        while pending and len(running) < parallel:
            case = pending.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                code = _child(case, equimol.cli.main)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code if 0 <= code < 256 else 1)
            running[pid] = case["name"]
        pid, status = os.wait()
        statuses[running.pop(pid)] = os.waitstatus_to_exitcode(status)
    return statuses


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with open(sys.argv[1]) as handle:
        all_cases = json.load(handle)
    print(json.dumps(run_cases(all_cases, int(sys.argv[2]))))
