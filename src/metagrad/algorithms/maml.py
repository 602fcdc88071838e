"""MAML (Finn et al., 2017) and its first-order approximation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metagrad.algorithms.base import MetaAlgorithm
from metagrad.algorithms.strategy import TaskFn
from metagrad.models.functional import Params


@dataclass(frozen=True)
class MAML(MetaAlgorithm):
    """Meta-loss: the query loss at the adapted parameters, differentiated through `adapt()`.

    With `first_order`, the inner gradients are detached: the meta-gradient is then the query
    loss gradient at φ, applied to θ (FOMAML).
    """

    first_order: bool = False

    def task_fn(self, params: Params, buffers: Params) -> TaskFn:
        def fn(x_support, y_support, x_query, y_query) -> dict[str, torch.Tensor]:
            fast = self.adapt(params, buffers, x_support, y_support, self.first_order).params
            loss = self.objective.loss(self.forward(fast, buffers, x_query), y_query)
            return {
                "loss": loss,
                **self.query_metrics("pre", params, buffers, x_query, y_query),
                **self.query_metrics("post", fast, buffers, x_query, y_query),
            }

        return fn
