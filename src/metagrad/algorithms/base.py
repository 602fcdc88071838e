"""What every meta-learning algorithm shares: the inner loop, the strategy, the meta-step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metagrad.algorithms.inner import Adaptation, InnerOptimizer, adapt
from metagrad.algorithms.strategy import TaskFn, accumulate_gradient
from metagrad.models.functional import Forward, Params
from metagrad.objectives import Objective
from metagrad.tasks.batch import TaskBatch


@dataclass(frozen=True)
class MetaAlgorithm:
    """An algorithm is only its per-task objective `task_fn`; `meta_step` is the same for all.

    `task_fn(params, buffers)` returns a function of one task whose `"loss"` output has, as its
    gradient w.r.t. θ averaged over tasks, the algorithm's meta-gradient.
    """

    forward: Forward
    objective: Objective
    inner_steps: int
    inner_optimizer: InnerOptimizer
    strategy: str = "vmap"
    chunk_size: int | None = None

    def task_fn(self, params: Params, buffers: Params) -> TaskFn:
        raise NotImplementedError

    def meta_step(
        self, params: Params, buffers: Params, batch: TaskBatch
    ) -> tuple[Params, dict[str, torch.Tensor]]:
        """Meta-gradient w.r.t. `params` and per-task metrics `[num_tasks]` for one meta-batch."""
        return accumulate_gradient(
            self.task_fn(params, buffers),
            params,
            batch,
            strategy=self.strategy,
            chunk_size=self.chunk_size,
        )

    def adapt(
        self, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor, first_order: bool
    ) -> Adaptation:
        return adapt(
            self.forward,
            params,
            buffers,
            x,
            y,
            loss_fn=self.objective.loss,
            steps=self.inner_steps,
            optimizer=self.inner_optimizer,
            first_order=first_order,
        )

    def query_metrics(
        self, prefix: str, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Metrics of `params` on `(x, y)` for logging, outside the meta-gradient's graph."""
        with torch.no_grad():
            metrics = self.objective.metrics(self.forward(params, buffers, x), y)
        return {f"{prefix}_{k}": v for k, v in metrics.items()}
