"""Meta-training on any task environment, the paper's baselines, and evaluation after k PG steps.

Meta-batch i of a run with seed s uses the tasks, the initial states and the action noise of
`task_generator(s, "train", i)`, so a run is a pure function of its seed and arguments.
Evaluation uses the "test" split (`fixed_tasks`).

Under `torchrun` (`world`), every process draws the same meta-batch and rolls out its own
contiguous part of the tasks, each task with the episodes it gets in one process; TRPO's
surrogate, KL and Fisher-vector products, and the logged returns, are combined over the
processes, so a run is the same on any number of them up to floating-point summation order
(which TRPO's conjugate gradient amplifies: benchmarks/RESULTS.md, scale-out).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from metagrad.execution.distributed import SINGLE, World
from metagrad.models.functional import Params
from metagrad.rl.environment import TaskEnvironment
from metagrad.rl.maml_trpo import MAMLTRPO, Evaluation, inner_adapt, masked_mean
from metagrad.rl.policy import init_policy, kl_divergence, log_prob, policy
from metagrad.rl.sampling import Batch, Episodes, rollout, to_batch
from metagrad.rl.trpo import TRPO, trpo_step
from metagrad.tasks.seeding import task_generator


@dataclass(frozen=True)
class IterationMetrics:
    iteration: int
    pre_return: float
    """Mean return of the support episodes (θ, before adaptation)."""
    post_return: float
    """Mean return of the query episodes (φ, after the inner steps)."""
    kl: float
    fraction: float
    """Accepted fraction of the TRPO step (0: rejected)."""
    env_steps: int
    seconds: float
    sampling_seconds: float


@dataclass
class TrainResult:
    params: Params
    """θ after the last iteration."""
    best_params: Params
    """θ of the iteration with the best post-adaptation return (the paper evaluates the best
    model seen during training)."""
    best_return: float = -math.inf
    history: list[IterationMetrics] = field(default_factory=list)
    outer_state: dict | None = None
    """The outer optimiser's state after the last iteration (PPO's Adam moments; None for
    TRPO), to continue the run."""


def _sample_adapted(
    algorithm: MAMLTRPO,
    env: TaskEnvironment,
    params: Params,
    tasks: torch.Tensor,
    rollouts: int,
    generator: torch.Generator,
    world: World,
) -> tuple[list[Batch], Batch, float, float, int]:
    """This process's support batches (θ, then each intermediate φ) and query batch (final φ),
    with the mean returns before and after adaptation and the number of environment steps of
    the whole meta-batch."""
    part = world.shard(tasks.shape[0])
    supports: list[Batch] = []
    fast = params
    env_steps = 0
    for step in range(algorithm.inner_steps + 1):
        episodes = rollout(env, fast, tasks, rollouts, generator, part)
        env_steps += episodes.steps
        batch = to_batch(episodes, gamma=algorithm.gamma, gae_lambda=algorithm.gae_lambda)
        if step == 0:
            pre = episodes.returns().mean()
        if step == algorithm.inner_steps:
            post = episodes.returns().mean()
            pre, post, steps = _whole(world, tasks, pre, post, env_steps / batch.mask.shape[0])
            return supports, batch, pre, post, round(steps * tasks.shape[0])
        supports.append(batch)
        with torch.no_grad():
            fast = algorithm.adapt(params, supports, first_order=True)
    raise AssertionError("unreachable")


def _whole(world: World, tasks: torch.Tensor, *means: torch.Tensor | float) -> list[float]:
    """The meta-batch's means from `means`, this process's means over its part of `tasks`."""
    local = torch.tensor([float(m) for m in means], dtype=torch.float64)
    return world.mean(local, tasks.shape[0]).tolist()


def _combine(world: World, meta_batch: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The meta-batch's value of a mean over this process's tasks (TRPO's `combine`)."""
    return functools.partial(world.mean, total=meta_batch)


def train_maml(
    env: TaskEnvironment,
    iterations: int,
    seed: int = 0,
    *,
    meta_batch: int = 20,
    rollouts: int = 20,
    hidden: Sequence[int] = (100, 100),
    init_std: float = 1.0,
    algorithm: MAMLTRPO | None = None,
    dtype: torch.dtype = torch.float32,
    time_budget: float | None = None,
    params: Params | None = None,
    start: int = 0,
    log: Callable[[IterationMetrics], None] | None = None,
    world: World = SINGLE,
    outer_state: dict | None = None,
) -> TrainResult:
    """MAML-TRPO on `env` for `iterations` meta-iterations, or until `time_budget` seconds have
    passed (checked after each iteration). The paper's navigation settings by default: 20 tasks,
    20 episodes per task per step, α = 0.1, one inner step, max KL 0.01 (HalfCheetah: 40 tasks).
    `params`, `start` (the first meta-batch index) and `outer_state` continue an earlier run;
    `world`: the processes that share each meta-batch (see the module docstring)."""
    algorithm = algorithm or MAMLTRPO()
    if params is None:
        params = init_policy(
            env.observation_size,
            env.action_size,
            hidden,
            init_std=init_std,
            generator=task_generator(seed, "train", 2**31 - 1),
            dtype=dtype,
        )
    result = TrainResult(params, params)
    clock = time.perf_counter()
    for iteration in range(start, start + iterations):
        began = time.perf_counter()
        generator = task_generator(seed, "train", iteration)
        tasks = env.sample_tasks(generator, meta_batch, dtype)
        supports, query, pre, post, env_steps = _sample_adapted(
            algorithm, env, params, tasks, rollouts, generator, world
        )
        sampled = time.perf_counter()
        combine = _combine(world, meta_batch)
        step = algorithm.meta_step(params, supports, query, combine, outer_state)
        outer_state = step.state
        if post > result.best_return:
            result.best_return, result.best_params = post, params
        params = step.params
        metrics = IterationMetrics(
            iteration,
            pre,
            post,
            step.kl,
            step.fraction,
            env_steps,
            time.perf_counter() - began,
            sampled - began,
        )
        result.history.append(metrics)
        if log:
            log(metrics)
        if time_budget is not None and time.perf_counter() - clock > time_budget:
            break
    result.params, result.outer_state = params, outer_state
    return result


def train_pretrained(
    env: TaskEnvironment,
    iterations: int,
    seed: int = 0,
    *,
    meta_batch: int = 20,
    rollouts: int = 20,
    hidden: Sequence[int] = (100, 100),
    init_std: float = 1.0,
    gamma: float = 0.99,
    gae_lambda: float = 1.0,
    trpo: TRPO | None = None,
    dtype: torch.dtype = torch.float32,
    time_budget: float | None = None,
    params: Params | None = None,
    start: int = 0,
    world: World = SINGLE,
) -> TrainResult:
    """The paper's "pretrained" baseline: one policy trained by TRPO on all tasks jointly
    (each iteration a fresh meta-batch of tasks), without adaptation."""
    trpo = trpo or TRPO()
    if params is None:
        params = init_policy(
            env.observation_size,
            env.action_size,
            hidden,
            init_std=init_std,
            generator=task_generator(seed, "train", 2**31 - 1),
            dtype=dtype,
        )
    result = TrainResult(params, params)
    clock = time.perf_counter()
    for iteration in range(start, start + iterations):
        began = time.perf_counter()
        generator = task_generator(seed, "train", iteration)
        tasks = env.sample_tasks(generator, meta_batch, dtype)
        episodes = rollout(env, params, tasks, rollouts, generator, world.shard(meta_batch))
        batch = to_batch(episodes, gamma=gamma, gae_lambda=gae_lambda)
        sampled = time.perf_counter()
        with torch.no_grad():
            old = policy(params, batch.observations).detach()
            old_log_prob = log_prob(old, batch.actions)

        def loss_and_kl(
            theta: Params, differentiable: bool, batch: Batch = batch, old=old, old_lp=old_log_prob
        ) -> tuple[torch.Tensor, torch.Tensor]:
            dist = policy(theta, batch.observations)
            ratio = torch.exp(log_prob(dist, batch.actions) - old_lp)
            loss = -masked_mean(ratio * batch.advantages, batch.mask).mean()
            return loss, masked_mean(kl_divergence(old, dist), batch.mask).mean()

        step = trpo_step(params, loss_and_kl, trpo, combine=_combine(world, meta_batch))
        local = batch.mask.shape[0]
        ret, steps = _whole(world, tasks, episodes.returns().mean(), episodes.steps / local)
        if ret > result.best_return:
            result.best_return, result.best_params = ret, params
        params = step.params
        result.history.append(
            IterationMetrics(
                iteration,
                ret,
                ret,
                step.kl,
                step.fraction,
                round(steps * meta_batch),
                time.perf_counter() - began,
                sampled - began,
            )
        )
        if time_budget is not None and time.perf_counter() - clock > time_budget:
            break
    result.params = params
    return result


def evaluate(
    params: Params,
    env: TaskEnvironment,
    tasks: torch.Tensor,
    *,
    rollouts: int = 20,
    steps: int = 3,
    lr_first: float = 0.1,
    lr_after: float = 0.05,
    gamma: float = 0.99,
    gae_lambda: float = 1.0,
    generator: torch.Generator | None = None,
    observe: Callable[[Episodes], object] | None = None,
    world: World = SINGLE,
) -> Evaluation:
    """The mean return on `tasks` after 0, 1, …, `steps` policy-gradient steps, each step on
    fresh episodes of the current policy; the first step with `lr_first`, later ones with
    `lr_after` (the original MAML test script halves the step size after the first step).
    `observe` is shown the episodes of every step (for trajectory plots). Under `world`, each
    process evaluates its part of the tasks and every process returns the whole table."""
    part = world.shard(tasks.shape[0])
    per_task = []
    fast = params
    supports: list[Batch] = []
    for step in range(steps + 1):
        episodes = rollout(env, fast, tasks, rollouts, generator, part)
        if observe:
            observe(episodes)
        per_task.append(episodes.returns().mean(-1))
        if step == steps:
            break
        supports.append(to_batch(episodes, gamma=gamma, gae_lambda=gae_lambda))
        lrs = [lr_first] + [lr_after] * (len(supports) - 1)
        with torch.no_grad():
            fast = inner_adapt(params, supports, lrs, first_order=True)
    own = {"returns": torch.stack(per_task, 1)}  # [own tasks, steps + 1]
    table = world.gather_rows(own, tasks.shape[0])["returns"].T
    ci = 1.96 * table.std(-1) / math.sqrt(table.shape[-1])
    return Evaluation(table.mean(-1), ci, table)
