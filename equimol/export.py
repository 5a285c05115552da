"""Self-contained model files: everything needed to rebuild a potential, nothing from the training config.

A model file is a ``torch.save`` of a plain mapping (tensors, numbers, strings; loaded with
``weights_only=True`` through :func:`equimol.safe_pickle.load_torch_file`, so opening one never runs code)::

    format            "equimol-model"
    format_version    FORMAT_VERSION (int); readers accept versions <= theirs
    equimol_version   the writer's equimol version
    model_config      ModelConfig.to_dict(): every hyperparameter (species, cutoff, backend, ...)
    species           atomic numbers, radial_cutoff (Å), dtype ("float32"/"float64"): for a quick look
    state_dict        the weights (EMA weights when exported from a training checkpoint)
    metadata          free-form, e.g. the checkpoint it came from
    weights_sha256    :func:`weights_checksum` of ``state_dict`` (files written before it existed lack it)

**Damage.** A model file is a zip archive whose entries carry a CRC, and ``weights_sha256`` is a
SHA-256 over every tensor's name, dtype, shape and bytes. Loading checks both: a flipped bit in a
weight (which ``torch.load`` itself would read without a word) is refused, naming the file; files
without a ``weights_sha256`` still load, checked by the CRCs alone.

A file written by a newer format, or that is not an equimol model file, fails to load with a
message that says which and what to do.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any

import torch

from equimol import __version__
from equimol.errors import EquimolInputError
from equimol.models import Potential, build_model
from equimol.utils.io import atomic_write

FORMAT = "equimol-model"
FORMAT_VERSION = 3
# Format 2: ModelConfig.scalar_first_layer (default true). Files of format 1 were written by models whose
# first product-basis layer took zero-padded inputs, so they load with it false.
# Format 3: ModelConfig.zbl_inner_fraction/zbl_outer_fraction (default 0.3/0.55). Older files switched ZBL
# from 0.5 to 1.0 of the covalent sum, so they load with those.


class ModelFileError(EquimolInputError):
    """A model file that cannot be read by this equimol (the message names the file and the reason)."""


def weights_checksum(state_dict: dict[str, torch.Tensor]) -> str:
    """``sha256:<hex>`` over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{str(tensor.dtype)}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def check_zip_entries(path: Path) -> None:
    """Raise :class:`ModelFileError` if an entry of the zip archive ``path`` fails its CRC (a damaged file)."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, RuntimeError) as error:
        raise ModelFileError(f"{path}: not an equimol model file ({type(error).__name__}: {error})") from error
    if damaged is not None:
        raise ModelFileError(f"{path}: entry {damaged!r} fails its CRC check; the file is damaged, use another copy")


def export_model(model: Potential, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (its current weights) to ``path``, atomically. Returns the path."""
    if not isinstance(model, Potential):
        raise TypeError(f"export_model needs an equimol Potential (build_model), got {type(model).__name__}")
    path = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "equimol_version": __version__,
        "model_config": model.config.to_dict(),
        "species": list(model.species),
        "radial_cutoff": float(model.radial_cutoff),
        "dtype": str(model.dtype).removeprefix("torch."),
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    payload["weights_sha256"] = weights_checksum(payload["state_dict"])
    with atomic_write(path) as handle:
        torch.save(payload, handle)
    return path


def read_model_file(path: str | Path) -> dict:
    """The checked payload of a model file (see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        UnsafeFileError: a file that asks to import anything but tensors and plain values (nothing of it ran).
        ModelFileError: not an equimol model file, a damaged one, or one of a newer format version.
    """
    from equimol.safe_pickle import UnsafeFileError, load_torch_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    check_zip_entries(path)
    try:
        payload = load_torch_file(path, "model file")
    except UnsafeFileError:
        raise
    except Exception as error:  # pickle/zip errors of every kind: report them as "not a model file"
        raise ModelFileError(f"{path}: not an equimol model file ({type(error).__name__}: {error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        hint = (
            " (a training checkpoint? convert it with `equimol export CHECKPOINT OUT`)"
            if isinstance(payload, dict) and "state_dict" in payload and "pytorch-lightning_version" in payload
            else ""
        )
        raise ModelFileError(f"{path}: not an equimol model file{hint}")
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{path}: format_version {version!r} is not a positive integer; the file is damaged")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model file format version {version!r} written by equimol {payload.get('equimol_version')}; "
            f"this equimol {__version__} reads format versions up to {FORMAT_VERSION}. Upgrade equimol to load it."
        )
    for key in ("model_config", "state_dict"):
        if key not in payload:
            raise ModelFileError(f"{path}: model file lacks {key!r}; the file is damaged")
    if not isinstance(payload["state_dict"], dict) or not all(
        isinstance(value, torch.Tensor) for value in payload["state_dict"].values()
    ):
        raise ModelFileError(f"{path}: the model file's state_dict is not a mapping of tensors; the file is damaged")
    stored = payload.get("weights_sha256")
    if stored is not None and stored != weights_checksum(payload["state_dict"]):
        raise ModelFileError(
            f"{path}: the weights do not match the file's weights_sha256 checksum; the file is damaged "
            "(a changed or corrupted weight), use another copy"
        )
    if version < 2 and isinstance(payload["model_config"], dict):
        payload["model_config"] = {"scalar_first_layer": False, **payload["model_config"]}
    if version < 3 and isinstance(payload["model_config"], dict):
        payload["model_config"] = {"zbl_inner_fraction": 0.5, "zbl_outer_fraction": 1.0, **payload["model_config"]}
    return payload


def load_model(
    path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None
) -> Potential:
    """Rebuild the potential stored in ``path`` (eval mode) on ``device``, cast to ``dtype`` if given.

    A compiled model file (``.pt2``, ``equimol export --format aotinductor``) loads as a
    :class:`~equimol.pt2_model.CompiledPotential` with the same call interface.

    Raises:
        FileNotFoundError, ModelFileError: see :func:`read_model_file`.
    """
    from equimol.utils.dtype import resolve_dtype

    if Path(path).suffix == ".pt2":
        from equimol.pt2_model import load_compiled

        return load_compiled(path, device=device, dtype=dtype)
    payload = read_model_file(path)
    try:
        model = build_model(payload["model_config"])
        model.load_state_dict(payload["state_dict"], strict=True)
    except (ValueError, RuntimeError, KeyError) as error:
        raise ModelFileError(f"{path}: the stored model cannot be rebuilt by equimol {__version__}: {error}") from error
    if dtype is not None:
        model = model.to(resolve_dtype(dtype))
    return model.to(device).eval()
