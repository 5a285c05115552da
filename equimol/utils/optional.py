"""Optional packages: whether one is installed, and importing the module that needs it with an error naming the extra.

Registries (tensor-product backends, many-body kinds) list such entries by name and import their
module on first use, so that ``import equimol`` never needs the optional package.
"""

from __future__ import annotations

import importlib
import importlib.util

from equimol.errors import EquimolInputError


def importable(package: str) -> bool:
    """Whether ``package`` can be imported (found, not imported)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a parent package is missing, or a module without a spec
        return False


def import_optional(module: str, package: str, extra: str, what: str) -> None:
    """Import ``module``, which needs ``package`` (installed by the pip extra ``extra``).

    Raises:
        EquimolInputError: the import failed; the message starts with ``what`` and names the extra.
    """
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise EquimolInputError(
            f"{what} needs the optional package {package!r}, which is not installed ({error}); install it with: "
            f"pip install 'equimol[{extra}]'"
        ) from error
