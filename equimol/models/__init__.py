"""The potential and its configuration.

>>> from equimol.models import build_model
>>> model = build_model({"species": ["H", "C"], "channels": 8, "lmax": 1, "avg_num_neighbors": 4.0})
>>> sorted(model(graph))  # doctest: +SKIP
['energy', 'forces', 'node_energy']

* :func:`build_model` -- a :class:`~equimol.models.potential.Potential` from the ``model:`` mapping.
* :class:`~equimol.models.config.ModelConfig` -- the typed configuration (unknown keys are errors).
* :func:`average_num_neighbors` -- the ``avg_num_neighbors`` statistic of a training set.
"""

from __future__ import annotations

import torch

from equimol.errors import ConfigError
from equimol.models.config import ModelConfig, SPEConfig
from equimol.models.potential import Potential
from equimol.models.statistics import average_num_neighbors


def build_model(config: dict | ModelConfig) -> Potential:
    """Build the potential from the ``model:`` section of a config.

    Parameters are initialised in float64 from ``config.seed`` (torch's global RNG state is saved and
    restored, so the caller's random stream is untouched), then cast to ``config.dtype``: the float32
    model is the float64 model rounded, and the same seed always gives the same model.

    Args:
        config: the ``model:`` mapping (see :mod:`equimol.models.config`), validated here, or a
            :class:`ModelConfig`, validated only if it was not made by ``from_dict``/``resolve_auto``.

    Raises:
        ConfigError: an unknown key, a value of the wrong type or range (the message names the key),
            an unknown tensor-product backend or a backend option it does not accept, or a key
            still ``"auto"`` (:meth:`ModelConfig.resolve_auto` fills those from the training data).
    """
    if not isinstance(config, ModelConfig):
        config = ModelConfig.from_dict(config)
    elif not config.validated:
        config.validate()
    if config.unresolved():
        keys = ", ".join(f"model.{key}" for key in config.unresolved())
        raise ConfigError(f"{keys}: 'auto' is filled from the training data; a model is built from numbers")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = Potential(config)
    return model.to(config.torch_dtype)


__all__ = ["ModelConfig", "Potential", "SPEConfig", "average_num_neighbors", "build_model"]
