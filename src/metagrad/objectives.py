"""What a task asks of the network: its loss, and the metrics reported for it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Metrics = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Objective:
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metrics: Metrics
    primary: str
    """The metric papers report (mse for regression, accuracy for classification)."""
    higher_is_better: bool


def _regression_metrics(outputs: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"mse": F.mse_loss(outputs, y)}


REGRESSION = Objective(F.mse_loss, _regression_metrics, primary="mse", higher_is_better=False)


def _classification_metrics(outputs: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "loss": F.cross_entropy(outputs, y),
        "accuracy": (outputs.argmax(-1) == y).float().mean(),
    }


CLASSIFICATION = Objective(
    F.cross_entropy, _classification_metrics, primary="accuracy", higher_is_better=True
)
