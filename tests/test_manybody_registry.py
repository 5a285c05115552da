"""The many-body registry: the kinds ``model.many_body`` accepts come from it, and a new kind is one builder."""

from __future__ import annotations

import pytest
import torch
from test_model_structures import build_structure, graph_of, tiny_config

from equimol.manybody import available, kinds, many_body_product, register_many_body, registry
from equimol.models import build_model
from equimol.models.config import ModelConfig


def test_the_shipped_kinds():
    assert {"cg", "gaunt"} <= set(available()) <= set(kinds())
    assert "cueq" in kinds()  # optional: listed whether or not cuEquivariance is installed
    with pytest.raises(ValueError, match="unknown many-body kind 'ace'; known kinds: cg, cueq, gaunt"):
        many_body_product("ace", 2, 1, 2, 2)


def test_config_choices_come_from_the_registry(monkeypatch):
    with pytest.raises(ValueError, match=r"many_body must be one of \['none', 'cg', 'cueq', 'gaunt'\]"):
        ModelConfig.from_dict(tiny_config(many_body="ace"))

    class Scaled(torch.nn.Module):
        """``P(x) = w[element] x``: the first order of every kind, equivariant for any irreps."""

        def __init__(self, num_elements: int) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(num_elements, 1, dtype=torch.float64))

        def forward(self, x: torch.Tensor, element_index: torch.Tensor) -> torch.Tensor:
            return self.weight[element_index] * x

    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))  # the registration is undone after the test
    register_many_body("scaled")(lambda channels, lmax, correlation, num_elements: Scaled(num_elements))
    assert "scaled" in kinds() and "scaled" in available()
    model = build_model(tiny_config(many_body="scaled"))
    assert isinstance(model.many_body[0].product, Scaled)
    assert torch.isfinite(model(graph_of(build_structure("benzene")))["forces"]).all()
    with pytest.raises(ValueError, match="already registered"):
        register_many_body("scaled")(lambda *sizes: Scaled(1))
