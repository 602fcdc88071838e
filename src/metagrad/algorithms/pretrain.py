"""Joint pre-training: the baseline the MAML paper compares against."""

from __future__ import annotations

import torch

from metagrad.algorithms.base import MetaAlgorithm
from metagrad.algorithms.strategy import Inner, Metrics, Outer
from metagrad.models.functional import Params


class Pretrain(MetaAlgorithm):
    """Plain supervised training on every example of every meta-training task, no inner loop.

    At test time the model is fine-tuned with the same `adapt()` as the meta-learned ones.
    Metrics: `train_*` of θ on every example of the task.
    """

    def parts(self, params: Params, buffers: Params, batched: bool) -> tuple[Inner, Outer]:
        def inner(x_support, y_support):
            return (self.stacked(params, x_support.shape[0]) if batched else params), {}

        def outer(fast, x_support, y_support, x_query, y_query) -> Metrics:
            dim = 1 if batched else 0
            x = torch.cat([x_support, x_query], dim)
            y = torch.cat([y_support, y_query], dim)
            outputs = self.network(batched)(fast, buffers, x)
            loss = self.loss(batched)(outputs, y)
            return {"loss": loss, **self.metrics("train", outputs, y, batched)}

        return inner, outer
