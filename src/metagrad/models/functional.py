"""Calling a plain `nn.Module` as a pure function of explicit parameter and buffer dicts."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]
Forward = Callable[[Params, Params, torch.Tensor], torch.Tensor]


def functional_forward(model: nn.Module) -> Forward:
    """`forward(params, buffers, x)`: the module's computation with the given tensors.

    The module itself is never mutated, so one module serves every task of a meta-batch and
    every adapted copy of its parameters.
    """

    def forward(params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (params, buffers), (x,))

    return forward


def meta_parameters(model: nn.Module) -> tuple[Params, Params]:
    """The module's own parameters (the meta-parameters θ) and buffers, by name."""
    return dict(model.named_parameters()), dict(model.named_buffers())
