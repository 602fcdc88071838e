"""Execution strategies: exact ways to compute one meta-gradient over the tasks of a meta-batch.

All strategies compute the same numbers; they differ in speed and memory, and which is fastest
depends on the model and the device, so it is measured once per run (`metagrad.execution.plan`):

- `vmap` vectorises every task into batched kernels: fast where per-call overhead dominates
  (small models, GPUs), slow and memory-hungry for convolutions on a CPU.
- `loop` runs the tasks one by one, one backward pass each (memory bounded by one task), with
  the fused batch-norm kernel. It is the reference the tests compare against.
- `hybrid` vectorises the inner loop over the tasks (small support sets: overhead-bound), runs
  each task's query loss and its backward one by one (large query sets: compute-bound), then
  back-propagates through the whole inner loop in one vector-Jacobian product.
- `batched` runs the network's own task-batched forward (`forward_tasks`: one parameter copy
  per task, batched matrix products and grouped convolutions) under plain autograd: vmap's
  batching without its per-operation cost. Only for networks that define it.

`chunk_size` bounds memory for `vmap`, `hybrid` and `batched`: one chunk's graph is alive at a
time (`loop` holds one task's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from metagrad.algorithms.base import Algorithm, MetaParameters, Metrics
from metagrad.execution.network import Network, TaskLearner
from metagrad.models.functional import Params
from metagrad.tasks.batch import Task, TaskBatch

TaskFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], Metrics]
"""`fn(x_support, y_support, x_query, y_query) -> {name: scalar}` for one task."""
TaskOf = Callable[[TaskLearner], TaskFn]
"""The task function to run with a given learner."""
MapTasks = Callable[[TaskOf, Network, TaskBatch], Metrics]


@dataclass(frozen=True, repr=False)  # vmap names its function by repr: keep tensors out
class TaskParts:
    """An algorithm's meta-objective for one task, in two halves so that strategies may run
    them differently, bound to the meta-parameters and the network.

    `inner(x_support, y_support) -> (φ, metrics)` adapts to the support set;
    `outer(φ, x_support, y_support, x_query, y_query) -> {"loss": …, metrics}` is the loss whose
    gradient (through φ, and through the meta-parameters where it uses them directly) is the
    meta-gradient. Where the network keeps batch-norm running statistics, both also report the
    batch statistics of their forward passes (`metagrad.execution.running`). `stacked` runs
    the same on a whole stack of tasks at once; `fused` runs one task with the fused batch-norm
    kernel, for strategies that call it outside `vmap`.
    """

    algorithm: Algorithm
    meta: MetaParameters
    network: Network
    checkpoint_inner: bool = False
    stacked: bool = False
    fused: bool = False

    def learner(self) -> TaskLearner:
        """A new learner for one part of a task (it records that part's batch statistics
        where the network keeps running statistics)."""
        if self.stacked:
            return self.network.stack_learner(self.checkpoint_inner)
        return self.network.task_learner(self.checkpoint_inner, self.fused, record=True)

    def inner(self, x_support: torch.Tensor, y_support: torch.Tensor) -> tuple[Params, Metrics]:
        learner = self.learner()
        fast, metrics = self.algorithm.inner(learner, self.meta, x_support, y_support)
        return fast, {**metrics, **learner.statistics("inner")}

    def outer(self, fast: Params, *task: torch.Tensor) -> Metrics:
        learner = self.learner()
        metrics = self.algorithm.outer(learner, self.meta, fast, Task(*task))
        return {**metrics, **learner.statistics("outer")}

    def __call__(self, *task: torch.Tensor) -> Metrics:
        fast, metrics = self.inner(*task[:2])
        return {**self.outer(fast, *task), **metrics}


Gradient = Callable[[TaskParts, list[torch.Tensor], TaskBatch, float], tuple[list, Metrics]]
"""`(parts, θ, tasks, scale) -> (scale · Σ_tasks ∂loss/∂θ, metrics [tasks])`."""


def vmap_gradient(
    parts: TaskParts, theta: list[torch.Tensor], tasks: TaskBatch, scale: float
) -> tuple[list[torch.Tensor], Metrics]:
    out = torch.func.vmap(parts)(*tasks.tensors())
    return _gradient(out["loss"].sum() * scale, theta), out


def loop_gradient(
    parts: TaskParts, theta: list[torch.Tensor], tasks: TaskBatch, scale: float
) -> tuple[list[torch.Tensor], Metrics]:
    grads, outputs = _zeros(theta), []
    parts = dataclasses.replace(parts, fused=True)
    for task in zip(*tasks.tensors(), strict=True):
        out = parts(*task)
        _add_(grads, torch.autograd.grad(out["loss"] * scale, theta, allow_unused=True))
        outputs.append(_detached(out))
    return grads, _stacked(outputs)


def hybrid_gradient(
    parts: TaskParts, theta: list[torch.Tensor], tasks: TaskBatch, scale: float
) -> tuple[list[torch.Tensor], Metrics]:
    fast, inner_metrics = torch.func.vmap(parts.inner)(tasks.x_support, tasks.y_support)
    names = list(fast)
    fast_grads = [torch.zeros_like(fast[k]) for k in names]
    grads, outputs, through_fast = _zeros(theta), [], False
    one_by_one = dataclasses.replace(parts, fused=True)
    for index, task in enumerate(zip(*tasks.tensors(), strict=True)):
        leaves = {k: fast[k][index].detach().requires_grad_() for k in names}
        out = one_by_one.outer(leaves, *task)
        wrt = [*leaves.values(), *theta]
        task_grads = torch.autograd.grad(out["loss"] * scale, wrt, allow_unused=True)
        for total, grad in zip(fast_grads, task_grads[: len(names)], strict=True):
            if grad is not None:
                total[index] = grad
                through_fast = True
        _add_(grads, task_grads[len(names) :])
        outputs.append(_detached(out))
    if through_fast:  # Reptile's outer loss does not depend on φ: nothing to propagate
        through_inner = torch.autograd.grad(
            [fast[k] for k in names], theta, fast_grads, allow_unused=True
        )
        _add_(grads, through_inner)
    return grads, {**_stacked(outputs), **_detached(inner_metrics)}


def batched_gradient(
    parts: TaskParts, theta: list[torch.Tensor], tasks: TaskBatch, scale: float
) -> tuple[list[torch.Tensor], Metrics]:
    out = dataclasses.replace(parts, stacked=True)(*tasks.tensors())
    return _gradient(out["loss"].sum() * scale, theta), out


GRADIENTS: dict[str, Gradient] = {
    "vmap": vmap_gradient,
    "loop": loop_gradient,
    "hybrid": hybrid_gradient,
    "batched": batched_gradient,
}
STRATEGIES = tuple(GRADIENTS)
UNVECTORISED = ("loop", "batched")
"""The strategies that run the inner loop outside `vmap`."""


def accumulate_gradient(
    parts: TaskParts,
    batch: TaskBatch,
    *,
    strategy: str,
    chunk_size: int | None = None,
) -> tuple[list[torch.Tensor], Metrics]:
    """Gradient of the mean over tasks of `parts(...)["loss"]` w.r.t. every meta-parameter
    (in `parts.meta.named()` order), and the metrics.

    Chunks of `chunk_size` tasks are processed one after the other, so at most one chunk's
    graph is alive. Returns the gradients and every metric, detached, `[num_tasks]` each.
    """
    theta = list(parts.meta.named().values())
    grads, outputs = None, []
    for chunk in batch.chunks(chunk_size):
        chunk_grads, out = GRADIENTS[strategy](parts, theta, chunk, 1 / batch.num_tasks)
        if grads is None:
            grads = chunk_grads
        else:
            _add_(grads, chunk_grads)
        outputs.append(_detached(out))
    metrics = {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}
    return grads, metrics


def map_vmap(task: TaskOf, network: Network, batch: TaskBatch) -> Metrics:
    return torch.func.vmap(task(network.task_learner()))(*batch.tensors())


def map_loop(task: TaskOf, network: Network, batch: TaskBatch) -> Metrics:
    fn = task(network.task_learner(fused=True))
    return _stacked([fn(*one) for one in zip(*batch.tensors(), strict=True)])


MAP_TASKS: dict[str, MapTasks] = {"vmap": map_vmap, "loop": map_loop}


def map_tasks_no_grad(
    task: TaskOf, network: Network, batch: TaskBatch, *, strategy: str
) -> Metrics:
    """`task(learner)` over every task of `batch` without building a graph for θ (evaluation),
    the learner being `network` as `strategy` runs it."""
    with torch.no_grad():
        return MAP_TASKS[strategy](task, network, batch)


def _gradient(loss: torch.Tensor, theta: list[torch.Tensor]) -> list[torch.Tensor]:
    """∂loss/∂θ, zeros for meta-parameters the loss does not use."""
    grads = torch.autograd.grad(loss, theta, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, theta, strict=True)]


def _zeros(theta: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.zeros_like(p) for p in theta]


def _add_(totals: list[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> None:
    for total, grad in zip(totals, grads, strict=True):
        if grad is not None:
            total.add_(grad)


def _detached(out: Metrics) -> Metrics:
    return {k: v.detach() for k, v in out.items()}


def _stacked(outputs: list[Metrics]) -> Metrics:
    return {k: torch.stack([o[k] for o in outputs]) for k in outputs[0]}
