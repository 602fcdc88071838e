"""Memory budgets: measure what a meta-step needs, and pick the fastest plan that fits.

Second-order MAML at 84×84 with several inner steps is where users run out of memory. Three
exact levers bound it: the strategy (vectorised or task by task), `chunk_size` (tasks
processed at once) and inner-step checkpointing (recompute instead of store). `plan_memory`
measures a meta-step's peak memory at chunk sizes 1 and 2, extrapolates linearly to the
largest chunk within the budget, and keeps the fastest candidate that fits.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time

from metagrad.algorithms.base import Algorithm, MetaParameters
from metagrad.errors import ConfigError, MemoryBudgetError
from metagrad.execution.memory import format_size, memory_in_use, peak_memory
from metagrad.execution.network import Network
from metagrad.execution.plan import ExecutionPlan, meta_gradient, strategies_for
from metagrad.tasks.batch import TaskBatch


@dataclasses.dataclass(frozen=True)
class Candidate:
    plan: ExecutionPlan
    memory: int
    """Estimated peak memory of a meta-step above what was in use."""
    seconds: float = math.inf

    def describe(self) -> str:
        return f"{self.plan.describe()}: {format_size(self.memory)}"


def plan_memory(
    algorithm: Algorithm,
    network: Network,
    meta: MetaParameters,
    batch: TaskBatch,
    budget: int,
    requested: ExecutionPlan | None = None,
) -> tuple[ExecutionPlan, list[Candidate], int]:
    """The fastest plan whose meta-step fits in `budget` bytes.

    `budget` counts the whole process (CPU) or all CUDA tensors (GPU). Only `requested`'s
    strategy is tried unless it is auto. Checkpointing is only tried when nothing fits without
    it (always used if `requested.checkpoint_inner`). Returns the plan, every candidate that fits
    (timed), and the memory in use before the meta-step.
    """
    requested = requested or ExecutionPlan()
    device = batch.x_support.device
    if device.type != "cuda" and not sys.platform.startswith("linux"):
        raise ConfigError(
            "train.max_memory needs Linux or a CUDA device to measure memory; "
            "set train.chunk_size and train.checkpoint_inner by hand instead"
        )
    in_use = memory_in_use(device)
    available = budget - in_use
    if available <= 0:
        raise ConfigError(
            f"train.max_memory = {format_size(budget)} but {format_size(in_use)} is already in "
            "use (libraries, dataset, model) before any meta-step; raise train.max_memory"
        )

    def step(plan: ExecutionPlan):
        return lambda: meta_gradient(algorithm, network, meta, batch, plan)

    rejected: list[Candidate] = []
    for checkpoint in (True,) if requested.checkpoint_inner else (False, True):
        runnable = strategies_for(network, checkpoint)
        wanted = runnable if requested.strategy == "auto" else (requested.strategy,)
        fitting = []
        for strategy in (s for s in wanted if s in runnable):
            plan = dataclasses.replace(
                requested, strategy=strategy, chunk_size=None, checkpoint_inner=checkpoint
            )
            candidate = _fit(step, plan, batch, available)
            (fitting if candidate.memory <= available else rejected).append(candidate)
        if fitting:
            break
    else:
        smallest = min(rejected, key=lambda c: c.memory)
        raise MemoryBudgetError(
            f"a meta-step of {batch.num_tasks} tasks needs at least "
            f"{format_size(smallest.memory)} above the {format_size(in_use)} in use "
            f"({smallest.describe()}), but train.max_memory leaves {format_size(available)}; "
            "raise train.max_memory, or lower task.n_query, algorithm.inner_steps or the image "
            "size",
            needed=smallest.memory,
        )
    timed = [dataclasses.replace(c, seconds=_seconds(step(c.plan))) for c in fitting]
    fastest = min(timed, key=lambda c: c.seconds)
    best = _verified(step, fastest, batch, available)
    return best.plan, timed, in_use


def _verified(step, candidate: Candidate, batch: TaskBatch, available: int) -> Candidate:
    """`candidate` measured as planned, its chunk halved while it exceeds `available` (the
    extrapolation from chunks of 1 and 2 can be optimistic)."""
    device = batch.x_support.device
    while True:
        memory = peak_memory(step(candidate.plan), device)
        chunk = candidate.plan.chunk_size or batch.num_tasks
        if memory <= available or chunk == 1 or candidate.plan.strategy == "loop":
            return dataclasses.replace(candidate, memory=memory)
        plan = dataclasses.replace(candidate.plan, chunk_size=chunk // 2)
        candidate = dataclasses.replace(candidate, plan=plan)


def _fit(step, plan: ExecutionPlan, batch: TaskBatch, available: int) -> Candidate:
    """Memory at chunk sizes 1 and 2, extrapolated to the largest chunk within `available`."""
    device = batch.x_support.device

    def memory_at(chunk: int | None) -> int:
        return peak_memory(step(dataclasses.replace(plan, chunk_size=chunk)), device)

    memory_at(1)  # first call: one-off allocations, not the meta-step's own need
    one = memory_at(1)
    if plan.strategy == "loop" or batch.num_tasks == 1:  # one task at a time whatever the chunk
        return Candidate(plan, one)
    per_task = max(memory_at(2) - one, 0)
    if one > available:
        return Candidate(dataclasses.replace(plan, chunk_size=1), one)
    largest = batch.num_tasks if per_task == 0 else 1 + int((available - one) // per_task)
    chunk = min(largest, batch.num_tasks)
    return Candidate(
        dataclasses.replace(plan, chunk_size=None if chunk == batch.num_tasks else chunk),
        one + per_task * (chunk - 1),
    )


def _seconds(step, repeats: int = 3) -> float:
    """The fastest of `repeats` meta-steps after a warm-up one: the least disturbed."""
    step()
    calls = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        calls.append(time.perf_counter() - start)
    return min(calls)
