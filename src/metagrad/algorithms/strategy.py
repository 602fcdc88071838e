"""Execution strategies: ways to run one per-task function over every task of a meta-batch.

All strategies compute the same numbers; they differ in speed and memory. `vmap` vectorises the
tasks into batched kernels (fast where per-call overhead dominates: small models, GPUs); `loop`
runs them one by one (fast for convolutions on a CPU, and the reference the tests compare
against). Gradient accumulation over chunks of tasks bounds memory for either.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from metagrad.models.functional import Params
from metagrad.tasks.batch import TaskBatch

TaskFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]
"""`fn(x_support, y_support, x_query, y_query) -> {name: scalar}` for one task."""
MapTasks = Callable[[TaskFn, TaskBatch], dict[str, torch.Tensor]]


def map_vmap(fn: TaskFn, batch: TaskBatch) -> dict[str, torch.Tensor]:
    return torch.func.vmap(fn)(*batch.tensors())


def map_loop(fn: TaskFn, batch: TaskBatch) -> dict[str, torch.Tensor]:
    outputs = [fn(*task) for task in zip(*batch.tensors(), strict=True)]
    return {k: torch.stack([o[k] for o in outputs]) for k in outputs[0]}


STRATEGIES: dict[str, MapTasks] = {"vmap": map_vmap, "loop": map_loop}


def fastest_strategy(
    run: Callable[[str], object], repeats: int = 2
) -> tuple[str, dict[str, float]]:
    """Time `run(strategy)` for every strategy (after one warm-up call); return the fastest.

    Which one wins depends on the model, the shapes and the device (vmap is an order of
    magnitude faster for an MLP, several times slower for a Conv-4 with many query images on a
    CPU), so it is measured, not guessed.
    """
    timings = {}
    for name in STRATEGIES:
        run(name)
        start = time.perf_counter()
        for _ in range(repeats):
            run(name)
        timings[name] = (time.perf_counter() - start) / repeats
    return min(timings, key=timings.get), timings


def accumulate_gradient(
    fn: TaskFn,
    params: Params,
    batch: TaskBatch,
    *,
    strategy: str,
    chunk_size: int | None = None,
) -> tuple[Params, dict[str, torch.Tensor]]:
    """Gradient of the mean of `fn(...)["loss"]` over the tasks w.r.t. `params`, and the metrics.

    One backward pass per chunk of `chunk_size` tasks, so at most one chunk's graph is alive.
    Returns the gradients and every output of `fn`, detached, `[num_tasks]` each.
    """
    map_tasks = STRATEGIES[strategy]
    names = list(params)
    grads: list[torch.Tensor] | None = None
    outputs: list[dict[str, torch.Tensor]] = []
    for chunk in batch.chunks(chunk_size):
        out = map_tasks(fn, chunk)
        chunk_grads = torch.autograd.grad(
            out["loss"].sum() / batch.num_tasks, [params[k] for k in names]
        )
        grads = (
            list(chunk_grads)
            if grads is None
            else [a + b for a, b in zip(grads, chunk_grads, strict=True)]
        )
        outputs.append({k: v.detach() for k, v in out.items()})
    metrics = {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}
    return dict(zip(names, grads, strict=True)), metrics


def map_tasks_no_grad(fn: TaskFn, batch: TaskBatch, *, strategy: str) -> dict[str, torch.Tensor]:
    """`fn` over every task without building a graph for θ (evaluation)."""
    with torch.no_grad():
        return STRATEGIES[strategy](fn, batch)
