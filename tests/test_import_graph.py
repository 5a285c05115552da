"""The import graph of the package: no circle, and the core never imports ``datasets`` or ``train``.

Every ``import`` statement of every module is read with :mod:`ast`, those inside functions and
classes included (an import deferred into a function still ties the two modules together). An edge
``a -> b`` means module ``a`` names module ``b``; ``from p import x`` names ``p.x`` when that is a
module, else ``p``. Loading ``p.x`` also runs ``p/__init__.py``, but that implied edge is left out:
counting it would turn every package whose ``__init__`` re-exports its submodules into a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# installed name -> folder in the repository (pyproject.toml's package-dir)
PACKAGES = {
    "equimol": ROOT / "equimol",
    "equimol.kernels": ROOT / "kernels",
    "equimol.datasets": ROOT / "datasets",
    "equimol.train": ROOT / "train",
    "equimol.lammps_plugin": ROOT / "lammps_plugin",
}


def package_modules() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the installed packages."""
    modules = {}
    for package, folder in PACKAGES.items():
        for file in folder.rglob("*.py"):
            parts = file.relative_to(folder).with_suffix("").parts
            if any(part in {"build", "__pycache__"} for part in parts):
                continue
            name = ".".join((package, *parts))
            modules[name.removesuffix(".__init__")] = file
    return modules


def imported_modules(name: str, file: Path, known: set[str]) -> set[str]:
    """The package modules that module ``name`` (at ``file``) imports anywhere in its body."""
    is_package = file.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # ``import equimol.tp.cg`` of a module; a name of a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    return {name: imported_modules(name, file, known) for name, file in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle ``[a, b, ..., a]`` of ``graph``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(step) == 1:
                return path[path.index(step) :] + [step]
            elif not state.get(step):
                state[step] = 1
                path.append(step)
                stack.append(iter(sorted(graph.get(step, ()))))
    return None


def test_the_scan_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "equimol.datasets.readers" in graph["equimol.datasets.oc20_raw"]  # ``from .readers import``
    assert "equimol.train.launch" in graph["equimol.cli.train"]  # inside ``run_train``
    assert "equimol.tp.cg" in graph["equimol.tp"]  # ``from equimol.tp import cg`` names the module


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


@pytest.mark.parametrize("layer", ["equimol.datasets", "equimol.train"])
def test_the_core_imports_neither_datasets_nor_train(layer):
    """Data flows config -> data -> model: the core (``equimol`` outside ``equimol.cli``) stands alone."""
    offenders = {
        name: sorted(target for target in targets if target == layer or target.startswith(layer + "."))
        for name, targets in import_graph().items()
        if name.startswith("equimol.")
        and not name.startswith(("equimol.cli", "equimol.datasets", "equimol.train", "equimol.kernels"))
    }
    offenders = {name: targets for name, targets in offenders.items() if targets}
    assert not offenders, f"core modules importing {layer}: {offenders}"
