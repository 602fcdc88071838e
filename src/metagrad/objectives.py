"""What a task asks of the network: its loss, and the metrics reported for it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Metrics = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Objective:
    """Loss and metrics of one task: `[n, ...]` outputs and targets → scalars.

    With `stacks`, the same two functions also take a stack of tasks (`[T, n, ...]` → `[T]`
    values): they reduce over the example dimensions only, so one definition serves a task and
    a stack. Without it, a stack is handled by vectorising them (`torch.func.vmap`), which costs
    time where the network is small.
    """

    loss: Loss
    metrics: Metrics
    primary: str
    """The metric papers report (mse for regression, accuracy for classification)."""
    higher_is_better: bool
    stacks: bool = False
    ensemble: Callable[[torch.Tensor], torch.Tensor] | None = None
    """The outputs of an ensemble from its members' (stacked on the first dimension); None:
    their mean. Classification: the log of the members' mean probabilities."""


def _mse(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of `[..., n, d]` outputs, over the last two dimensions."""
    return (outputs - y).square().mean(dim=(-2, -1))


REGRESSION = Objective(
    loss=_mse,
    metrics=lambda outputs, y: {"mse": _mse(outputs, y)},
    primary="mse",
    higher_is_better=False,
    stacks=True,
)


def _cross_entropy(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of `[..., n, C]` logits for `[..., n]` labels, over the examples."""
    picked = outputs.log_softmax(-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return -picked.mean(-1)


CLASSIFICATION = Objective(
    loss=_cross_entropy,
    metrics=lambda outputs, y: {
        "loss": _cross_entropy(outputs, y),
        "accuracy": (outputs.argmax(-1) == y).float().mean(-1),
    },
    primary="accuracy",
    higher_is_better=True,
    stacks=True,
    ensemble=lambda outputs: outputs.log_softmax(-1).logsumexp(0) - math.log(outputs.shape[0]),
)
