"""The activations the EGNN and its heads use, by name: one place that knows them."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

#: Activation names accepted by ``EGNNConfig``, the heads and the edge op.
ACTIVATIONS: tuple[str, ...] = ("relu", "silu")

_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "silu": nn.functional.silu,
}
_MODULES: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU}


def check_activation(name: str) -> str:
    """``name`` if it is one of ``ACTIVATIONS``; ValueError otherwise."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(map(repr, ACTIVATIONS))}, got {name!r}")
    return name


def activation_fn(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The elementwise function of activation ``name`` (any shape and float dtype)."""
    return _FUNCTIONS[check_activation(name)]


def activation_module(name: str) -> nn.Module:
    """A fresh ``nn.Module`` applying activation ``name``."""
    return _MODULES[check_activation(name)]()
