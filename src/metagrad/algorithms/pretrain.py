"""Joint pre-training: the baseline the MAML paper compares against."""

from __future__ import annotations

import torch

from metagrad.algorithms.base import MetaAlgorithm
from metagrad.algorithms.strategy import TaskFn
from metagrad.models.functional import Params


class Pretrain(MetaAlgorithm):
    """Plain supervised training on every example of every meta-training task, no inner loop.

    At test time the model is fine-tuned with the same `adapt()` as the meta-learned ones.
    """

    def task_fn(self, params: Params, buffers: Params) -> TaskFn:
        def fn(x_support, y_support, x_query, y_query) -> dict[str, torch.Tensor]:
            x = torch.cat([x_support, x_query])
            y = torch.cat([y_support, y_query])
            loss = self.objective.loss(self.forward(params, buffers, x), y)
            return {"loss": loss, **self.query_metrics("pre", params, buffers, x_query, y_query)}

        return fn
