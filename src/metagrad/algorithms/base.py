"""What every meta-learning algorithm shares: the inner loop, the strategy, the meta-step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from metagrad.algorithms.inner import Adaptation, InnerOptimizer, adapt
from metagrad.algorithms.strategy import (
    STRATEGIES,
    UNVECTORISED,
    Inner,
    Metrics,
    Outer,
    TaskParts,
    accumulate_gradient,
)
from metagrad.errors import ConfigError
from metagrad.models.functional import Forward, Params
from metagrad.objectives import Loss, Objective
from metagrad.tasks.batch import TaskBatch


@dataclass(frozen=True)
class MetaAlgorithm:
    """An algorithm is only its per-task objective `parts`; `meta_step` is the same for all.

    `parts(params, buffers, batched)` returns the inner loop and the outer loss of one task
    (`batched=False`) or of a stack of tasks with a task-batched network (`batched=True`); the
    gradient w.r.t. θ of the `"loss"` output, averaged over tasks, is the algorithm's
    meta-gradient. Metrics: `support_*` of θ on the support set before adaptation (computed by
    the first inner step, so free), `query_*` of φ on the query set after adaptation.
    """

    forward: Forward
    objective: Objective
    inner_steps: int
    inner_optimizer: InnerOptimizer
    strategy: str = "vmap"
    chunk_size: int | None = None
    forward_tasks: Forward | None = None
    """The network over a stack of tasks (`tasks_forward(model)`); enables strategy `batched`."""
    checkpoint_inner: bool = False
    """Recompute each inner step in the backward pass instead of storing its activations."""

    def parts(self, params: Params, buffers: Params, batched: bool) -> tuple[Inner, Outer]:
        raise NotImplementedError

    def __post_init__(self) -> None:
        if self.strategy != "auto" and self.strategy not in self.strategies:
            raise ConfigError(
                f"train.strategy = {self.strategy} cannot run here: batched needs a network with "
                "a task-batched forward (the MLP and the Conv-4) and an objective with per-task "
                "losses; checkpoint_inner cannot run under vmap (vmap, hybrid). Choose one of "
                f"{', '.join(self.strategies)}, or auto"
            )

    def task_parts(self, params: Params, buffers: Params) -> TaskParts:
        stacked = TaskParts(*self.parts(params, buffers, True)) if self.can_batch else None
        return TaskParts(*self.parts(params, buffers, False), batched=stacked)

    @property
    def can_batch(self) -> bool:
        """Whether the network and the objective have task-batched forms."""
        return self.forward_tasks is not None and self.objective.task_loss is not None

    @property
    def strategies(self) -> tuple[str, ...]:
        """The execution strategies this algorithm and network can run: `batched` needs
        task-batched forms; inner-step checkpointing cannot run under `vmap`."""
        usable = [s for s in STRATEGIES if s != "batched" or self.can_batch]
        return tuple(s for s in usable if not self.checkpoint_inner or s in UNVECTORISED)

    def meta_step(
        self, params: Params, buffers: Params, batch: TaskBatch
    ) -> tuple[Params, dict[str, torch.Tensor]]:
        """Meta-gradient w.r.t. `params` and per-task metrics `[num_tasks]` for one meta-batch."""
        return accumulate_gradient(
            self.task_parts(params, buffers),
            params,
            batch,
            strategy=self.strategy,
            chunk_size=self.chunk_size,
        )

    def adapt(
        self,
        params: Params,
        buffers: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        first_order: bool,
        batched: bool = False,
    ) -> Adaptation:
        """`adapt()` with this algorithm's inner loop; `batched`: `params` and `(x, y)` stack
        several tasks, and the losses it reports are summed over them."""
        return adapt(
            self.network(batched),
            params,
            buffers,
            x,
            y,
            loss_fn=self._summed(self.loss(batched)),
            steps=self.inner_steps,
            optimizer=self.inner_optimizer,
            first_order=first_order,
            checkpoint=self.checkpoint_inner,
        )

    def inner(
        self,
        params: Params,
        buffers: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        first_order: bool,
        batched: bool = False,
    ) -> tuple[Params, Metrics]:
        """φ adapted to the support set `(x, y)`, and the `support_*` metrics of θ on it."""
        params = self.stacked(params, x.shape[0]) if batched else params
        adaptation = self.adapt(params, buffers, x, y, first_order, batched)
        outputs = adaptation.initial_outputs
        if outputs is None:  # no inner step: one forward pass just for the metrics
            with torch.no_grad():
                outputs = self.network(batched)(params, buffers, x)
        return adaptation.params, self.metrics("support", outputs, y, batched)

    def network(self, batched: bool) -> Forward:
        return self.forward_tasks if batched else self.forward

    def loss(self, batched: bool) -> Loss:
        """Loss of one task (a scalar), or of each task of a stack (`[T]`)."""
        return self.objective.task_loss if batched else self.objective.loss

    def metrics(
        self, prefix: str, outputs: torch.Tensor, y: torch.Tensor, batched: bool = False
    ) -> Metrics:
        """Metrics of `outputs` for logging, outside the meta-gradient's graph."""
        metrics_fn = self.objective.task_metrics if batched else self.objective.metrics
        with torch.no_grad():
            metrics = metrics_fn(outputs.detach(), y)
        return {f"{prefix}_{k}": v for k, v in metrics.items()}

    @staticmethod
    def stacked(params: Params, num_tasks: int) -> Params:
        """θ as one copy per task (views, so gradients flow back to θ)."""
        return {k: p.expand(num_tasks, *p.shape) for k, p in params.items()}

    @staticmethod
    def _summed(loss: Loss) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The inner loop minimises the sum of per-task losses: each task's own parameters
        receive only their own task's gradient."""
        return lambda outputs, y: loss(outputs, y).sum()
