r"""Compiled model files (``.pt2``) checked before torch opens them: no entry of the archive can run code.

torch's readers trust a ``.pt2`` file as a program. Opening an exported program
(``torch.export.load``, then ``.module()``) would

* unpickle, with ``weights_only=False``, every weight or constant marked ``use_pickle: true``, every
  ``custom_obj_*``/``opaque_obj_*`` constant, and the sample inputs when the weights-only reader fails;
* resolve each graph node's ``target`` by walking attributes from ``torch`` (so
  ``torch.serialization.os.system`` is a valid target), ``_operator`` or ``math``;
* ``sympy.sympify`` every symbolic-size expression (``expr_str``), which evaluates Python;
* ``exec`` the program's ``guards_code`` strings; and
* write parameter names into the Python source of the module it generates.

:func:`check_compiled_archive` reads the archive with :mod:`zipfile` and :mod:`json` only and
refuses, with :class:`UnsafeArchiveError` naming the entry, anything outside what
:func:`equimol.pt2_model.compile_model` writes:

* an entry outside the expected names (:data:`EXPORT_ENTRIES`, :data:`AOTI_ENTRIES`), a path that
  leaves the archive's root folder (``..``, ``/``), an entry whose CRC does not match (a damaged file);
* any weight or constant stored as a pickle, or of a custom or opaque object kind; sample inputs
  that torch's weights-only reader does not accept;
* a node target other than an ATen operator (except those that touch files, ``from_file``),
  a plain arithmetic ``_operator`` or a ``torch.sym_*`` function;
* a symbolic expression that is not built from sympy's number, symbol and arithmetic classes
  (checked on its Python syntax tree: calls of allowed names, numbers, symbol-name strings);
* a guard that is not arithmetic over ``L['<input>'].size()[i]`` (syntax tree again);
* any other string of the program (names, argument strings) that is not a plain identifier,
  number or dotted name;
* metadata (``equimol/metadata.json``) without its keys or with values of the wrong kind.

**AOTInductor packages** hold compiled shared libraries (``data/aotinductor/model/*.so``; the LAMMPS target
also ``data/aotinductor/layer<t>_forward|backward/``), which
torch loads with ``dlopen``: machine code that runs by design. Their archive is checked the same
way (no pickles, nothing outside the expected names, no path out of the archive), but the library
itself cannot be checked. Load only AOTInductor packages you compiled or trust; share
``equimol export --format export`` files, which hold no code (``SECURITY.md``).
"""

from __future__ import annotations

import ast
import io
import json
import math
import re
import zipfile
from pathlib import Path
from typing import Any

from equimol.errors import EquimolInputError

MODES = ("aotinductor", "export")
METADATA = "equimol/metadata.json"
_COMMON = (r"archive_format", r"archive_version", r"byteorder", r"\.data/version", r"\.data/serialization_id", METADATA)
EXPORT_ENTRIES = re.compile(
    "|".join(
        (
            *_COMMON,
            r"models/model\.json",
            r"data/sample_inputs/model\.pt",
            r"data/weights/model_weights_config\.json",
            r"data/weights/weight_\d+",
            r"data/constants/model_constants_config\.json",
            r"data/constants/tensor_\d+",
        )
    )
)
AOTI_ENTRIES = re.compile(
    "|".join(
        (
            *_COMMON,
            # one program, or (LAMMPS's pair_style equimol) one per layer, equimol.pt2_lammps
            r"data/aotinductor/(model|layer\d+_(forward|backward))/[A-Za-z0-9_.-]+",
            r"data/constants/[A-Za-z0-9_.-]+",
        )
    )
)
_PLAIN = re.compile(r"[A-Za-z0-9_.:+\-]*")
_ATEN = re.compile(r"torch\.ops\.aten\.([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)")
_OPERATORS = frozenset(
    "getitem add sub mul truediv floordiv mod pow neg pos abs eq ne lt le gt ge and_ or_ xor not_ invert".split()
)
_SYM_FUNCTIONS = frozenset("sym_max sym_min sym_float sym_int sym_not sym_ite sym_sqrt sym_sum".split())
# names a symbolic size may call: sympy's numbers, symbols, arithmetic and logic, and torch's integer functions
_SYMPY_NAMES = frozenset(
    """Symbol Dummy Integer Rational Float Mul Add Pow Max Min Mod Abs floor ceiling sqrt Piecewise ExprCondPair
    Eq Ne Lt Le Gt Ge StrictLessThan StrictGreaterThan LessThan GreaterThan Equality Unequality And Or Not
    true false oo zoo nan Infinity NegativeInfinity One Zero NegativeOne Half BooleanTrue BooleanFalse
    FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift PowByNatural
    FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt
    RoundDecimal ToFloat Identity""".split()
)
_SYMBOL = re.compile(r"[a-z]{1,4}\d+")
_ARITHMETIC = (
    ast.Expression, ast.Load, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Tuple,
    ast.operator, ast.unaryop, ast.boolop, ast.cmpop,
)  # fmt: skip
_GUARD_ATTRIBUTES = frozenset("size stride storage_offset dim numel inf nan isnan isinf floor ceil sqrt trunc".split())


class UnsafeArchiveError(EquimolInputError):
    """A compiled model file holding something equimol never writes, or damaged (the message names the entry)."""


def _syntax_only(text: str, node_allowed) -> bool:
    """Whether ``text`` parses as one Python expression whose every syntax-tree node passes ``node_allowed``."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return False
    return all(node_allowed(node) for node in ast.walk(tree))


def _sympy_node(node: ast.AST) -> bool:
    """A node of a sympy expression of allowed classes, numbers and symbol names only."""
    if isinstance(node, ast.Name):
        return node.id in _SYMPY_NAMES or bool(_SYMBOL.fullmatch(node.id)) or node.id in ("True", "False")
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name)
    if isinstance(node, ast.keyword):
        return node.arg is not None and node.arg.isidentifier() and not node.arg.startswith("_")
    if isinstance(node, ast.Constant):
        value = node.value
        text = isinstance(value, str) and bool(re.fullmatch(r"[A-Za-z0-9.+\-]*", value))
        return isinstance(value, (int, float, bool, type(None))) or text
    return isinstance(node, _ARITHMETIC)


def _guard_node(node: ast.AST) -> bool:
    """A node of arithmetic over ``L['<name>'].size()[i]``-like terms (what torch.export writes as guards)."""
    if isinstance(node, ast.Name):
        return node.id in ("L", "math", "inf")
    if isinstance(node, ast.Attribute):
        return node.attr in _GUARD_ATTRIBUTES
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Attribute) and not node.keywords
    if isinstance(node, ast.Constant):
        value = node.value
        return isinstance(value, (int, float, bool)) or (isinstance(value, str) and value.isidentifier())
    return isinstance(node, (*_ARITHMETIC, ast.Subscript))


def _target_safe(target: str) -> bool:
    aten = _ATEN.fullmatch(target)
    if aten:
        return "file" not in aten.group(1)
    module, _, name = target.rpartition(".")
    return (module == "_operator" and name in _OPERATORS) or (module == "torch" and name in _SYM_FUNCTIONS)


def _check_program(program: Any, entry: str) -> None:
    """Walk the serialized program (``models/model.json``) and refuse anything outside the rules above."""

    def refuse(what: str, value: Any) -> None:
        raise UnsafeArchiveError(f"{entry}: {what} {str(value)[:120]!r} is not one equimol writes")

    def walk(value: Any, key: str | None) -> None:
        if isinstance(value, dict):
            if "target" in value and "inputs" in value and not _target_safe(str(value["target"])):
                refuse("operator", value["target"])
            for name, item in value.items():
                if name == "metadata":
                    continue  # stack traces and module paths: kept as text, never evaluated
                if name in ("custom_obj_values", "as_custom_obj") and item:
                    refuse("custom object", name)
                if not _PLAIN.fullmatch(name) and key != "range_constraints":
                    refuse("key", name)
                if key == "range_constraints" and not _SYMBOL.fullmatch(name):
                    refuse("symbol", name)
                walk(item, name)
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif isinstance(value, str):
            if key == "expr_str":
                if not _syntax_only(value, _sympy_node):
                    refuse("symbolic expression", value)
            elif key == "guards_code":
                if not _syntax_only(value, _guard_node):
                    refuse("guard", value)
            elif key in ("in_spec", "out_spec", "context"):  # tree specs: JSON inside the JSON
                try:
                    walk(json.loads(value), None)
                except json.JSONDecodeError:
                    refuse("tree spec", value)
            elif not _PLAIN.fullmatch(value):
                refuse("string", value)

    walk(program, None)


def _check_payload_config(archive: zipfile.ZipFile, path: Path, root: str, config_name: str, prefix: str) -> None:
    """Every weight or constant of ``config_name`` is raw tensor bytes (``use_pickle: false``) in ``prefix*``."""
    if f"{root}/{config_name}" not in archive.namelist():
        return
    entry = f"{path}: {config_name}"
    try:
        config = json.loads(archive.read(f"{root}/{config_name}")).get("config", {})
    except (json.JSONDecodeError, AttributeError) as error:
        raise UnsafeArchiveError(f"{entry}: not a weights table ({error})") from error
    folder = config_name.rsplit("/", 1)[0]
    for name, payload in config.items() if isinstance(config, dict) else [("config", config)]:
        if not isinstance(payload, dict) or payload.get("use_pickle") is not False:
            raise UnsafeArchiveError(
                f"{entry}: {name!r} is stored as a pickle, which could run code when opened; "
                "equimol writes raw tensor bytes only"
            )
        path_name = str(payload.get("path_name", ""))
        if not re.fullmatch(rf"{prefix}\d+", path_name) or f"{root}/{folder}/{path_name}" not in archive.namelist():
            raise UnsafeArchiveError(f"{entry}: {name!r} points at {path_name!r}, not one of the archive's tensors")


def _check_metadata(metadata: Any, entry: str) -> dict:
    expected = {
        "format": lambda v: v == "equimol-compiled",
        "mode": lambda v: v in MODES,
        "species": lambda v: isinstance(v, list) and v and all(isinstance(z, int) and 0 < z < 119 for z in v),
        "radial_cutoff": lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v > 0,
        "dtype": lambda v: v in ("float32", "float64"),
        "device_type": lambda v: isinstance(v, str) and bool(re.fullmatch(r"[a-z]+", v)),
        "model_config": lambda v: isinstance(v, dict),
    }
    if not isinstance(metadata, dict):
        raise UnsafeArchiveError(f"{entry}: not a mapping; the file is damaged")
    for key, valid in expected.items():
        if key not in metadata:
            raise UnsafeArchiveError(f"{entry}: lacks {key!r}; the file is damaged or not written by equimol")
        if not valid(metadata[key]):
            raise UnsafeArchiveError(f"{entry}: {key} = {str(metadata[key])[:80]!r} is not valid; the file is damaged")
    return metadata


def _check_sample_inputs(data: bytes, entry: str) -> None:
    import torch

    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure here would make torch retry with weights_only=False
        raise UnsafeArchiveError(
            f"{entry}: not plain tensors ({type(error).__name__}); torch would unpickle it with code allowed"
        ) from error


def check_compiled_archive(path: str | Path) -> dict:
    """Check the compiled model file ``path`` (see the module docstring); returns its equimol metadata.

    Raises:
        FileNotFoundError: no such file.
        UnsafeArchiveError: anything the module docstring lists (the message names the entry).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"compiled model file {str(path)!r} does not exist")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise UnsafeArchiveError(f"{path}: not an equimol compiled model file ({error})") from error
    with archive:
        names = archive.namelist()
        roots = {name.split("/", 1)[0] for name in names}
        if len(roots) != 1:
            raise UnsafeArchiveError(f"{path}: entries under {len(roots)} root folders; the file is damaged")
        root = roots.pop()
        relative = [name[len(root) + 1 :] for name in names]
        if f"{root}/{METADATA}" not in names:
            raise UnsafeArchiveError(f"{path}: no {METADATA}; not an equimol compiled model file")
        try:
            metadata = _check_metadata(json.loads(archive.read(f"{root}/{METADATA}")), f"{path}: {METADATA}")
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UnsafeArchiveError(f"{path}: {METADATA} is not JSON ({error}); the file is damaged") from error
        allowed = EXPORT_ENTRIES if metadata["mode"] == "export" else AOTI_ENTRIES
        for name in relative:
            parts = name.split("/")
            if not allowed.fullmatch(name) or ".." in parts or name.startswith("/") or "\\" in name:
                raise UnsafeArchiveError(f"{path}: unexpected entry {name!r}; equimol writes no such entry")
        damaged = archive.testzip()
        if damaged is not None:
            raise UnsafeArchiveError(f"{path}: entry {damaged!r} fails its checksum (CRC); the file is damaged")
        if archive.read(f"{root}/archive_format").strip() != b"pt2":
            raise UnsafeArchiveError(f"{path}: archive_format is not pt2; the file is damaged or of another kind")
        _check_payload_config(archive, path, root, "data/weights/model_weights_config.json", "weight_")
        _check_payload_config(archive, path, root, "data/constants/model_constants_config.json", "tensor_")
        if metadata["mode"] == "export":
            program_entry = f"{root}/models/model.json"
            for needed in (program_entry, f"{root}/data/sample_inputs/model.pt"):
                if needed not in names:
                    raise UnsafeArchiveError(f"{path}: lacks {needed}; the file is damaged")
            try:
                program = json.loads(archive.read(program_entry))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise UnsafeArchiveError(f"{path}: {program_entry} is not JSON; the file is damaged") from error
            _check_program(program, f"{path}: models/model.json")
            _check_sample_inputs(archive.read(f"{root}/data/sample_inputs/model.pt"), f"{path}: sample inputs")
    return metadata
