r"""Exponential moving average (EMA) of a model's parameters.

After every optimizer step, :math:`\bar\theta \leftarrow d\,\bar\theta + (1 - d)\,\theta` with the
decay :math:`d` warmed up as :math:`\min(d, (1 + k) / (10 + k))` at update :math:`k` (so early
averages are not dominated by the random initialisation). Validation, testing and export use
:math:`\bar\theta`; :meth:`ExponentialMovingAverage.swapped` exchanges the two sets in place. The
averages are float64 whatever the model's dtype, so that decays close to one do not lose the update
to rounding in float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from equimol.errors import EquimolInputError


class ExponentialMovingAverage:
    """EMA of ``model``'s floating parameters (buffers are constants in equimol models and are not averaged)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        self.shadow = {
            name: p.detach().to(torch.float64).clone() for name, p in model.named_parameters() if name in self.names
        }

    def _parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        named = dict(model.named_parameters())
        for name in self.names:
            yield name, named[name]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        for name, parameter in self._parameters(model):
            shadow = self.shadow[name]
            if shadow.device != parameter.device:
                shadow = self.shadow[name] = shadow.to(parameter.device)
            shadow.mul_(decay).add_(parameter.detach().to(torch.float64), alpha=1.0 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averages into ``model``'s parameters (cast to their dtype)."""
        for name, parameter in self._parameters(model):
            parameter.copy_(self.shadow[name].to(parameter.dtype))

    def apply_to(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Load the averages into ``model``; returns its own weights, for :meth:`restore`."""
        saved = {name: p.detach().clone() for name, p in self._parameters(model)}
        self.copy_to(model)
        return saved

    @torch.no_grad()
    def restore(self, model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
        """Put back the weights that :meth:`apply_to` returned."""
        for name, parameter in self._parameters(model):
            parameter.copy_(saved[name])

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[None]:
        """Within the block, ``model`` holds the averages; its own weights come back afterwards."""
        saved = self.apply_to(model)
        try:
            yield
        finally:
            self.restore(model, saved)

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "shadow": {name: t.cpu() for name, t in self.shadow.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        missing = sorted(set(self.names) - set(state["shadow"]))
        if missing:
            raise EquimolInputError(f"EMA state lacks parameters {missing[:5]}; the checkpoint is of another model")
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        self.shadow = {name: state["shadow"][name].to(torch.float64).clone() for name in self.names}
