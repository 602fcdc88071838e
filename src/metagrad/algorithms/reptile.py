"""Reptile (Nichol, Achiam and Schulman, 2018)."""

from __future__ import annotations

import torch

from metagrad.algorithms.base import MetaAlgorithm
from metagrad.algorithms.strategy import TaskFn
from metagrad.models.functional import Params


class Reptile(MetaAlgorithm):
    """Meta-gradient θ − mean φ, handed to the outer optimizer like any other gradient.

    Each task contributes ½‖θ − stopgrad(φ)‖², whose gradient w.r.t. θ is θ − φ: Reptile then
    runs through the same strategies and gradient accumulation as MAML. With SGD and outer lr ε
    the outer step is θ ← θ + ε·(mean φ − θ).
    """

    def task_fn(self, params: Params, buffers: Params) -> TaskFn:
        def fn(x_support, y_support, x_query, y_query) -> dict[str, torch.Tensor]:
            fast = self.adapt(params, buffers, x_support, y_support, first_order=True).params
            loss = sum(((params[k] - fast[k].detach()) ** 2).sum() for k in params) / 2
            return {
                "loss": loss,
                **self.query_metrics("pre", params, buffers, x_query, y_query),
                **self.query_metrics("post", fast, buffers, x_query, y_query),
            }

        return fn
