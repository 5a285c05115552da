"""Fine-tuning: start training from the weights of a model file (``model.init_from``).

.. code-block:: yaml

    model:
      init_from: runs/3bpa/model.pt   # a model file (equimol export / run_dir/model.pt)
      species: [H, C, N, O, F]        # may add elements: they get freshly initialised weights
      e0s: auto                       # the new data's references (data.element_references; "fit" fits them)
    finetune:
      freeze: [embedding, interactions.0]   # parameter-name prefixes kept fixed
      pretrained_lr_factor: 0.1             # learning-rate factor for the pretrained parameters

**Configuration.** Keys absent from the ``model:`` section are taken from the model file, so a
fine-tuning config may give only ``init_from``. Architecture keys that are given must equal the
model file's: otherwise :func:`merge_pretrained_config` refuses with one error that names every
differing key. ``avg_num_neighbors: auto`` means the pretrained value (it is a normalisation the
weights were trained with). ``species`` may add elements (appended after the pretrained ones);
the ZBL keys (``pair_repulsion``, ``zbl_*``) and ``dispersion`` may change, as they have no weights.

**Weights.** Every parameter and buffer is copied from the file. Per-element tensors (embedding,
species self-connections, many-body weights, ...) are copied for the pretrained elements; the rows
of new elements keep their fresh initialisation (``model.seed``). The readout's
``energy_scale``/``energy_shift`` of pretrained elements come from the file (the network's output
was trained in their units); those of new elements from the config (``auto``: the new data).
The reference energies ``e0s`` always come from the config: re-estimated from the new data
(``e0s: auto``) or given explicitly. A per-element tensor that cannot be extended along one element
axis (e.g. the SPE input layer, which mixes elements and filters) makes adding elements an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from equimol.config_fields import AUTO
from equimol.errors import EquimolInputError

# keys that may differ from the model file (everything else is architecture)
NOT_ARCHITECTURE = (
    "init_from",
    "species",
    "e0s",
    "energy_shift",
    "energy_scale",
    "seed",
    "dtype",
    "pair_repulsion",  # ZBL has no weights: it may be added when fine-tuning
    "zbl_inner",
    "zbl_outer",
    "zbl_inner_fraction",
    "zbl_outer_fraction",
    "dispersion",  # D3 has no weights either
)
# buffers never taken from the model file: the config (new data) gives them
FROM_CONFIG = ("readout.e0s",)


class FinetuneError(EquimolInputError):
    """A fine-tuning configuration that does not fit the pretrained model (the message names the keys)."""


def _read(path: str | Path) -> dict:
    from equimol.export import ModelFileError, read_model_file

    try:
        return read_model_file(Path(path).expanduser())
    except (FileNotFoundError, ModelFileError) as error:
        raise FinetuneError(f"model.init_from: {error}") from error


def merge_pretrained_config(model: dict) -> dict:
    """The ``model:`` section completed from the file ``model["init_from"]`` (see the module docstring).

    The merged mapping is validated once, by the caller (:func:`equimol.train.config.validate_config`).

    Raises:
        FinetuneError: unreadable file, or architecture keys that differ from the file's (all named).
    """
    from equimol.nn.embedding import parse_species

    path = Path(model["init_from"]).expanduser().resolve()
    pretrained = dict(_read(path)["model_config"])
    given = dict(model)
    if given.get("avg_num_neighbors") == AUTO:
        given.pop("avg_num_neighbors")
    if isinstance(given.get("spe"), dict):  # a partial spe section overrides the file's keys only
        given["spe"] = {**pretrained.get("spe", {}), **given["spe"]}
    differing = [
        key
        for key, value in given.items()
        if key not in NOT_ARCHITECTURE and key in pretrained and value is not None and value != pretrained[key]
    ]
    if differing:
        details = "; ".join(f"{key}: config {given[key]!r}, model file {pretrained[key]!r}" for key in differing)
        raise FinetuneError(
            f"model.init_from={path}: the architecture differs from the pretrained model in key(s) {differing} "
            f"({details}); drop these keys from the model section to inherit the file's values"
        )
    merged = {key: value for key, value in pretrained.items() if key != "dtype"}
    merged.update({"energy_shift": AUTO, "energy_scale": AUTO})
    merged.update({key: value for key, value in given.items() if value is not None or key in NOT_ARCHITECTURE})
    merged["init_from"] = str(path)
    old_species = list(pretrained["species"])
    try:
        new_species = parse_species(given.get("species", old_species))
        merged["species"] = old_species + [z for z in new_species if z not in old_species]
    except (ValueError, TypeError) as error:
        raise FinetuneError(f"model: {error}") from error
    return merged


def load_pretrained(model: nn.Module, path: str | Path) -> set[str]:
    """Copy the weights of the model file ``path`` into ``model`` (see the module docstring).

    Returns:
        the names of the parameters that came (wholly or, for per-element tensors, in part) from the file.

    Raises:
        FinetuneError: a tensor missing from the file, or one whose shape cannot be matched.
    """
    payload = _read(path)
    old_count = len(payload["model_config"]["species"])
    new_count = len(model.species)
    if list(model.species[:old_count]) != list(payload["model_config"]["species"]):
        raise FinetuneError(f"model.init_from={path}: the model's species must start with the file's species")
    stored = payload["state_dict"]
    state = model.state_dict()
    missing = sorted(set(state) - set(stored))
    if missing:
        raise FinetuneError(f"model.init_from={path}: the file lacks tensor(s) {missing}")
    parameter_names = {name for name, _ in model.named_parameters()}
    copied: set[str] = set()
    with torch.no_grad():
        for name, target in state.items():
            if name in FROM_CONFIG:
                continue
            source = stored[name].to(target.dtype)
            if source.shape == target.shape:
                target.copy_(source)
            else:
                differ = [
                    d for d in range(target.dim()) if source.dim() != target.dim() or source.shape[d] != target.shape[d]
                ]
                if len(differ) != 1 or source.shape[differ[0]] != old_count or target.shape[differ[0]] != new_count:
                    raise FinetuneError(
                        f"model.init_from={path}: tensor {name!r} has shape {tuple(source.shape)} in the file and "
                        f"{tuple(target.shape)} here, not one per-element axis {old_count} -> {new_count}; "
                        "this architecture cannot add elements when fine-tuning"
                    )
                target.narrow(differ[0], 0, old_count).copy_(source)
            if name in parameter_names:
                copied.add(name)
    return copied


def freeze(model: nn.Module, prefixes: Iterable[str]) -> list[str]:
    """Set ``requires_grad=False`` on parameters named ``prefix`` or ``prefix.*``; returns their names.

    Raises:
        FinetuneError: a prefix that matches no parameter (the message lists the top-level parts).
    """
    names = [name for name, _ in model.named_parameters()]
    frozen = []
    for prefix in prefixes:
        matched = [name for name in names if name == prefix or name.startswith(f"{prefix}.")]
        if not matched:
            parts = sorted({name.split(".")[0] for name in names})
            raise FinetuneError(f"finetune.freeze: {prefix!r} names no parameter; parts of this model: {parts}")
        frozen.extend(matched)
    parameters = dict(model.named_parameters())
    for name in frozen:
        parameters[name].requires_grad_(False)
    return sorted(set(frozen))


def parameter_groups(model: nn.Module, lr: float, pretrained: set[str], lr_factor: float) -> list[dict]:
    """Optimizer groups of the trainable parameters: new ones at ``lr``, pretrained ones at ``lr * lr_factor``."""
    fresh, old = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (old if name in pretrained else fresh).append(parameter)
    groups = [{"params": fresh, "lr": lr}, {"params": old, "lr": lr * lr_factor}]
    return [group for group in groups if group["params"]]
