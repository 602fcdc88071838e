"""Reptile (Nichol, Achiam and Schulman, 2018)."""

from __future__ import annotations

import torch

from metagrad.algorithms.base import MetaAlgorithm
from metagrad.algorithms.strategy import Inner, Metrics, Outer
from metagrad.models.functional import Params


class Reptile(MetaAlgorithm):
    """Meta-gradient θ − mean φ, handed to the outer optimizer like any other gradient.

    Each task contributes ½‖θ − stopgrad(φ)‖², whose gradient w.r.t. θ is θ − φ: Reptile then
    runs through the same strategies and gradient accumulation as MAML. With SGD and outer lr ε
    the outer step is θ ← θ + ε·(mean φ − θ).
    """

    def parts(self, params: Params, buffers: Params, batched: bool) -> tuple[Inner, Outer]:
        def inner(x_support, y_support):
            return self.inner(params, buffers, x_support, y_support, True, batched)

        def outer(fast, x_support, y_support, x_query, y_query) -> Metrics:
            squares = [(params[k] - fast[k].detach()).square() for k in params]
            per_task = [s.flatten(1).sum(1) if batched else s.sum() for s in squares]
            with torch.no_grad():
                outputs = self.network(batched)(fast, buffers, x_query)
            return {"loss": sum(per_task) / 2, **self.metrics("query", outputs, y_query, batched)}

        return inner, outer
