"""Memory budgets: measure what a meta-step needs, and pick the fastest way that fits.

Second-order MAML at 84×84 with several inner steps is where users run out of memory. Three
exact levers bound it: the strategy (vectorised or task by task), `chunk_size` (tasks
processed at once) and inner-step checkpointing (recompute instead of store). `plan_memory`
measures a meta-step's peak memory at chunk sizes 1 and 2, extrapolates linearly to the
largest chunk within the budget, and keeps the fastest candidate that fits.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable

import torch

from metagrad.algorithms import MetaAlgorithm
from metagrad.errors import ConfigError
from metagrad.models.functional import Params
from metagrad.tasks.batch import TaskBatch


def format_size(size: float) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def memory_in_use(device: torch.device) -> int:
    """What the process holds now: CUDA tensors on a GPU, resident memory on a CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return _proc_status("VmRSS:")


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak memory `fn()` adds to what is in use when it starts.

    CUDA: the allocator's peak. CPU: the process's peak resident memory (Linux), after
    returning freed heap memory to the system, so that reuse does not hide the need.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    start = reset_peak_rss()
    fn()
    return peak_rss() - start


def reset_peak_rss() -> int:
    """Return freed heap memory to the system, reset the process's peak resident size to the
    current one (Linux), and return it in bytes."""
    _release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError as err:
        raise ConfigError(
            f"cannot reset the peak memory counter ({err}), so train.max_memory cannot be "
            "measured here; set train.chunk_size and train.checkpoint_inner by hand instead"
        ) from None
    return _proc_status("VmRSS:")


def peak_rss() -> int:
    """The process's peak resident size since the last `reset_peak_rss` (Linux), in bytes."""
    return _proc_status("VmHWM:")


@dataclasses.dataclass(frozen=True)
class Candidate:
    strategy: str
    chunk_size: int | None
    checkpoint_inner: bool
    memory: int
    """Estimated peak memory of a meta-step above what was in use."""
    seconds: float = math.inf

    def describe(self) -> str:
        at_once = "all" if self.chunk_size is None else self.chunk_size
        chunks = "one task at a time" if self.strategy == "loop" else f"{at_once} tasks at once"
        inner = ", inner steps recomputed" if self.checkpoint_inner else ""
        return f"{self.strategy} ({chunks}{inner}): {format_size(self.memory)}"


def plan_memory(
    algorithm: MetaAlgorithm,
    params: Params,
    buffers: Params,
    batch: TaskBatch,
    budget: int,
    device: torch.device,
    strategies: tuple[str, ...] | None = None,
) -> tuple[MetaAlgorithm, list[Candidate], int]:
    """The fastest (strategy, chunk size, checkpointing) whose meta-step fits in `budget`.

    `budget` counts the whole process (CPU) or all CUDA tensors (GPU). Checkpointing is only
    tried when nothing fits without it (always used if `algorithm.checkpoint_inner`). Returns
    the configured algorithm, every candidate that fits (timed), and the memory in use before
    the meta-step.
    """
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
    tasks = batch.num_tasks
    rejected: list[Candidate] = []
    for checkpoint in (True,) if algorithm.checkpoint_inner else (False, True):
        variant = dataclasses.replace(algorithm, strategy="auto", checkpoint_inner=checkpoint)
        fitting = []
        for strategy in strategies or variant.strategies:
            if strategy not in variant.strategies:
                continue
            candidate = _fit(variant, strategy, params, buffers, batch, available, device)
            (fitting if candidate.memory <= available else rejected).append(candidate)
        if fitting:
            break
    else:
        smallest = min(rejected, key=lambda c: c.memory)
        raise ConfigError(
            f"a meta-step of {tasks} tasks needs at least {format_size(smallest.memory)} above "
            f"the {format_size(in_use)} in use ({smallest.describe()}), but train.max_memory "
            f"leaves {format_size(available)}; raise train.max_memory, or lower "
            "task.n_query, algorithm.inner_steps or the image size"
        )
    timed = [
        dataclasses.replace(c, seconds=_seconds(_configured(variant, c), params, buffers, batch))
        for c in fitting
    ]
    fastest = min(timed, key=lambda c: c.seconds)
    best = _verified(variant, fastest, params, buffers, batch, device, available)
    return _configured(variant, best), timed, in_use


def _verified(variant, candidate, params, buffers, batch, device, available) -> Candidate:
    """`candidate` measured as configured, its chunk halved while it exceeds `available` (the
    extrapolation from chunks of 1 and 2 can be optimistic)."""
    while True:
        step = functools.partial(_configured(variant, candidate).meta_step, params, buffers, batch)
        memory = peak_memory(step, device)
        chunk = candidate.chunk_size or batch.num_tasks
        if memory <= available or chunk == 1 or candidate.strategy == "loop":
            return dataclasses.replace(candidate, memory=memory)
        candidate = dataclasses.replace(candidate, chunk_size=chunk // 2)


def _fit(variant, strategy, params, buffers, batch, available, device) -> Candidate:
    """Memory at chunk sizes 1 and 2, extrapolated to the largest chunk within `available`."""

    def memory_at(chunk: int | None) -> int:
        configured = dataclasses.replace(variant, strategy=strategy, chunk_size=chunk)
        return peak_memory(lambda: configured.meta_step(params, buffers, batch), device)

    checkpoint = variant.checkpoint_inner
    memory_at(1)  # first call: one-off allocations, not the meta-step's own need
    one = memory_at(1)
    if strategy == "loop" or batch.num_tasks == 1:  # one task at a time whatever the chunk
        return Candidate(strategy, None, checkpoint, one)
    per_task = max(memory_at(2) - one, 0)
    if one > available:
        return Candidate(strategy, 1, checkpoint, one)
    largest = batch.num_tasks if per_task == 0 else 1 + int((available - one) // per_task)
    chunk = min(largest, batch.num_tasks)
    return Candidate(
        strategy,
        None if chunk == batch.num_tasks else chunk,
        checkpoint,
        one + per_task * (chunk - 1),
    )


def _configured(algorithm: MetaAlgorithm, candidate: Candidate) -> MetaAlgorithm:
    return dataclasses.replace(
        algorithm,
        strategy=candidate.strategy,
        chunk_size=candidate.chunk_size,
        checkpoint_inner=candidate.checkpoint_inner,
    )


def _seconds(algorithm: MetaAlgorithm, params, buffers, batch, repeats: int = 3) -> float:
    """The fastest of `repeats` meta-steps after a warm-up one: the least disturbed."""
    algorithm.meta_step(params, buffers, batch)
    calls = []
    for _ in range(repeats):
        start = time.perf_counter()
        algorithm.meta_step(params, buffers, batch)
        calls.append(time.perf_counter() - start)
    return min(calls)


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise ConfigError(f"/proc/self/status has no {key} line: cannot measure memory here")


def _release_free_memory() -> None:
    """Hand freed heap memory back to the system (glibc), so the next peak is the real one."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
