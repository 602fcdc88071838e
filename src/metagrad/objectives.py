"""What a task asks of the network: its loss, and the metrics reported for it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Metrics = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Objective:
    """Loss and metrics of one task (`[n, ...]` outputs), and, optionally, the same per task for
    a stack of tasks (`[T, n, ...]` outputs → `[T]` values), written directly to save the cost
    of vectorising the one-task forms (which is done where they are missing)."""

    loss: Loss
    metrics: Metrics
    primary: str
    """The metric papers report (mse for regression, accuracy for classification)."""
    higher_is_better: bool
    task_loss: Loss | None = None
    task_metrics: Metrics | None = None
    ensemble: Callable[[torch.Tensor], torch.Tensor] | None = None
    """The outputs of an ensemble from its members' (stacked on the first dimension); None:
    their mean. Classification: the log of the members' mean probabilities."""


def _task_mse(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (outputs - y).square().flatten(1).mean(1)


REGRESSION = Objective(
    loss=F.mse_loss,
    metrics=lambda outputs, y: {"mse": F.mse_loss(outputs, y)},
    task_loss=_task_mse,
    task_metrics=lambda outputs, y: {"mse": _task_mse(outputs, y)},
    primary="mse",
    higher_is_better=False,
)


def _task_cross_entropy(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs.transpose(1, 2), y, reduction="none").mean(1)


CLASSIFICATION = Objective(
    loss=F.cross_entropy,
    metrics=lambda outputs, y: {
        "loss": F.cross_entropy(outputs, y),
        "accuracy": (outputs.argmax(-1) == y).float().mean(),
    },
    task_loss=_task_cross_entropy,
    task_metrics=lambda outputs, y: {
        "loss": _task_cross_entropy(outputs, y),
        "accuracy": (outputs.argmax(-1) == y).float().mean(-1),
    },
    primary="accuracy",
    higher_is_better=True,
    ensemble=lambda outputs: outputs.log_softmax(-1).logsumexp(0) - math.log(outputs.shape[0]),
)
