"""Reptile (Nichol, Achiam and Schulman, 2018)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metagrad.algorithms.base import Algorithm, Learner, MetaParameters, Metrics
from metagrad.models.functional import Params
from metagrad.tasks.batch import Task


@dataclass(frozen=True)
class Reptile(Algorithm):
    """Meta-gradient θ − mean φ, handed to the outer optimizer like any other gradient.

    Each task contributes ½‖θ − stopgrad(φ)‖², whose gradient w.r.t. θ is θ − φ: Reptile then
    runs through the same execution and gradient accumulation as MAML. With SGD and outer lr ε
    the outer step is θ ← θ + ε·(mean φ − θ).
    """

    def inner(self, learner, meta, x_support, y_support) -> tuple[Params, Metrics]:
        return self.adapted(learner, meta.network, x_support, y_support, first_order=True)

    def outer(self, learner: Learner, meta: MetaParameters, fast: Params, task: Task) -> Metrics:
        theta = meta.network
        distance = sum(learner.total((theta[k] - fast[k].detach()).square()) for k in theta)
        with torch.no_grad():
            outputs = learner(fast, task.x_query)
        return {"loss": distance / 2, **learner.metrics("query", outputs, task.y_query)}
