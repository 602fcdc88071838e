"""The execution plan of a run, chosen once: strategy, chunk size, inner-step checkpointing
(and the precision of the forward passes, which the run's config sets).

`meta_gradient(algorithm, network, meta, batch, plan)` is the one entry point from the math to
the machinery. `choose_plan` picks the plan at the start of a run by a short probe, and the run
keeps it: training, validation and test all use it, and the checkpoint stores it.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import torch

from metagrad.algorithms.base import Algorithm, MetaParameters, Metrics
from metagrad.errors import ConfigError
from metagrad.execution.memory import release_free_memory
from metagrad.execution.network import Network
from metagrad.execution.strategies import (
    STRATEGIES,
    UNVECTORISED,
    TaskParts,
    accumulate_gradient,
)
from metagrad.tasks.batch import TaskBatch

Report = Callable[[str], object]

PROBE_SECONDS = 60.0
"""The probe stops timing after this long and keeps the fastest strategy so far."""
LOSING = 2.0
"""A strategy whose step is this many times slower than the fastest so far is dropped, even
after its first call (which also pays one-off costs)."""
SHORT = 0.05
"""Seconds under which one call is too short to time alone."""
PROBE_ORDER = ("loop", "batched", "hybrid", "vmap")
"""The lightest first: if time runs out, what was measured is the safest choice."""
PRECISIONS = ("float32", "bf16")


@dataclass(frozen=True)
class ExecutionPlan:
    """How the tasks of a meta-batch are executed; every plan of the same precision gives the
    same meta-gradient.

    `strategy`: vmap, loop, hybrid, batched (`metagrad.execution.strategies`), or auto (to be
    chosen by `choose_plan`). `chunk_size`: tasks at once (None: all). `checkpoint_inner`:
    recompute each inner step in the backward pass instead of storing it. `precision`:
    float32, or bf16 for forward passes under `torch.autocast` (parameters, meta-gradient and
    outer optimizer stay float32).
    """

    strategy: str = "auto"
    chunk_size: int | None = None
    checkpoint_inner: bool = False
    precision: str = "float32"

    def __post_init__(self) -> None:
        if self.strategy not in (*STRATEGIES, "auto"):
            raise ConfigError(
                f"strategy = {self.strategy!r} is not an execution strategy; choose one of "
                f"{', '.join(STRATEGIES)}, or auto"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision = {self.precision!r} is not a precision; choose one of "
                f"{', '.join(PRECISIONS)}"
            )
        if self.checkpoint_inner and self.strategy not in (*UNVECTORISED, "auto"):
            raise ConfigError(
                f"checkpoint_inner cannot run under vmap (strategy {self.strategy}); use one of "
                f"{', '.join(UNVECTORISED)}, or auto"
            )

    @property
    def evaluation(self) -> str:
        """How tasks are mapped without gradients (validation, test): one by one where the run
        executes them one by one, vectorised otherwise."""
        return "loop" if self.strategy == "loop" else "vmap"

    def describe(self) -> str:
        at_once = "all tasks" if self.chunk_size is None else f"{self.chunk_size} tasks"
        inner = ", inner steps recomputed" if self.checkpoint_inner else ""
        bf16 = ", bf16 autocast" if self.precision == "bf16" else ""
        return f"{self.strategy} ({at_once} at once{inner}{bf16})"

    def to_dict(self) -> dict:
        return asdict(self)


def strategies_for(network: Network, checkpoint_inner: bool = False) -> tuple[str, ...]:
    """The strategies that can run `network`: `batched` needs its task-batched forms;
    inner-step checkpointing cannot run under `vmap`."""
    usable = [s for s in STRATEGIES if s != "batched" or network.can_stack]
    return tuple(s for s in usable if not checkpoint_inner or s in UNVECTORISED)


def meta_gradient(
    algorithm: Algorithm,
    network: Network,
    meta: MetaParameters,
    batch: TaskBatch,
    plan: ExecutionPlan,
) -> tuple[MetaParameters, Metrics]:
    """The meta-gradient of `algorithm` for one meta-batch (shaped like `meta`) and the
    per-task metrics (`[num_tasks]` each), executed as `plan` says. Where the network keeps
    batch-norm running statistics, the metrics also hold each forward pass's batch statistics
    (`running.*`, `[num_tasks, channels]`): `Network.update_running_statistics` applies them."""
    if plan.strategy == "auto":
        raise ConfigError(
            "meta_gradient needs a chosen plan, not strategy auto: call choose_plan() first, "
            "or use MetaLearner, which chooses at its first meta-batch"
        )
    if plan.strategy not in strategies_for(network, plan.checkpoint_inner):
        raise ConfigError(
            f"strategy {plan.strategy} cannot run this network: batched needs a network with "
            "forward_tasks (the MLP and the Conv-4) that keeps no batch-norm running statistics "
            "(MAML++'s per_step_statistics keeps some). "
            f"Choose one of {', '.join(strategies_for(network, plan.checkpoint_inner))}, or auto"
        )
    parts = TaskParts(algorithm, meta, network, plan.checkpoint_inner)
    with torch.autocast(
        batch.x_support.device.type, torch.bfloat16, enabled=plan.precision == "bf16"
    ):
        grads, metrics = accumulate_gradient(
            parts, batch, strategy=plan.strategy, chunk_size=plan.chunk_size
        )
    flat = iter(grads)
    shaped = MetaParameters(*({k: next(flat) for k in part} for part in meta))
    return shaped, metrics


def choose_plan(
    algorithm: Algorithm,
    network: Network,
    meta: MetaParameters,
    batch: TaskBatch,
    requested: ExecutionPlan,
    *,
    strategies: Sequence[str] | None = None,
    seconds: float = PROBE_SECONDS,
    report: Report = print,
) -> ExecutionPlan:
    """`requested` if its strategy is given; for `auto`, the fastest strategy on `batch`.

    The probe runs each candidate once (which also warms it up) and drops those more than
    `LOSING` times slower than the fastest; then, in rounds, it times one meta-step of each
    remaining candidate and keeps the faster half (successive halving), until one is left: for
    four strategies, 10 meta-steps in all. After `seconds`, the fastest so far wins. It reports
    what it does. Memory it freed is handed back afterwards, so the chosen strategy runs
    as fast after the probe as in a fresh process.
    """
    if requested.strategy != "auto":
        return requested
    runnable = strategies or strategies_for(network, requested.checkpoint_inner)
    candidates = [s for s in PROBE_ORDER if s in runnable]
    report(f"choosing how to execute a meta-step: timing {', '.join(candidates)} on one batch")
    start = time.perf_counter()

    def measure(strategy: str) -> float:
        """The fastest of as many calls as fit in `SHORT` seconds (one at least, ten at most):
        a millisecond step is timed several times, a second-long one once."""
        plan = replace(requested, strategy=strategy)
        calls: list[float] = []
        while not calls or (sum(calls) < SHORT and len(calls) < 10):
            tick = time.perf_counter()
            meta_gradient(algorithm, network, meta, batch, plan)
            _synchronize(batch.x_support.device)
            calls.append(time.perf_counter() - tick)
        return min(calls)

    first, failures = {}, {}
    for strategy in candidates:  # one call each: warm-up, and what cannot run drops out
        if time.perf_counter() - start > seconds and first:
            break
        try:
            first[strategy] = measure(strategy)
        except (RuntimeError, NotImplementedError) as err:  # e.g. an op vmap cannot batch
            failures[strategy] = f"{type(err).__name__}: {str(err).strip().splitlines()[0]}"
            report(f"  {strategy}: cannot run ({failures[strategy]})")
    if not first:
        raise ConfigError(
            "no execution strategy can run this algorithm and network: "
            + "; ".join(f"{s}: {why}" for s, why in failures.items())
        )
    report("  first calls: " + _timings(first))
    candidates = [s for s in first if first[s] <= LOSING * min(first.values())]
    best: dict[str, float] = {}
    for round_ in range(1, 4):
        if len(candidates) <= 1 or time.perf_counter() - start > seconds:
            break
        for strategy in candidates:
            best[strategy] = min(best.get(strategy, math.inf), measure(strategy))
        ranked = sorted(candidates, key=best.get)
        # successive halving: the faster half goes on, and none far behind the fastest
        keep = ranked[: math.ceil(len(ranked) / 2)]
        candidates = [s for s in keep if best[s] <= LOSING * best[ranked[0]]]
        report(f"  round {round_}: " + _timings({s: best[s] for s in ranked}))
    chosen = min(candidates, key=lambda s: best.get(s, first[s]))
    gc.collect()
    release_free_memory()
    plan = replace(requested, strategy=chosen)
    report(f"execution plan: {plan.describe()} (chosen in {time.perf_counter() - start:.1f} s)")
    return plan


def _timings(seconds: dict[str, float]) -> str:
    return ", ".join(f"{s} {t:.3g} s" for s, t in sorted(seconds.items(), key=lambda i: i[1]))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
