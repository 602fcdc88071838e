"""Meta-training on any task environment, the paper's baselines, and evaluation after k PG steps.

Meta-batch i of a run with seed s uses the tasks, the initial states and the action noise of
`task_generator(s, "train", i)`, so a run is a pure function of its seed and arguments.
Evaluation uses the "test" split (`fixed_tasks`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

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


def _sample_adapted(
    algorithm: MAMLTRPO,
    env: TaskEnvironment,
    params: Params,
    tasks: torch.Tensor,
    rollouts: int,
    generator: torch.Generator,
) -> tuple[list[Batch], Batch, float, float, int]:
    """Support batches (θ, then each intermediate φ) and the query batch (final φ), with the
    mean returns before and after adaptation and the number of environment steps."""
    supports: list[Batch] = []
    fast = params
    pre = post = 0.0
    env_steps = 0
    for step in range(algorithm.inner_steps + 1):
        episodes = rollout(env, fast, tasks, rollouts, generator)
        env_steps += episodes.steps
        batch = to_batch(episodes, gamma=algorithm.gamma, gae_lambda=algorithm.gae_lambda)
        if step == 0:
            pre = episodes.returns().mean().item()
        if step == algorithm.inner_steps:
            post = episodes.returns().mean().item()
            return supports, batch, pre, post, env_steps
        supports.append(batch)
        with torch.no_grad():
            fast = algorithm.adapt(params, supports, first_order=True)
    raise AssertionError("unreachable")


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
) -> TrainResult:
    """MAML-TRPO on `env` for `iterations` meta-iterations, or until `time_budget` seconds have
    passed (checked after each iteration). The paper's navigation settings by default: 20 tasks,
    20 episodes per task per step, α = 0.1, one inner step, max KL 0.01 (HalfCheetah: 40 tasks).
    `params` and `start` (the first meta-batch index) continue an earlier run."""
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
            algorithm, env, params, tasks, rollouts, generator
        )
        sampled = time.perf_counter()
        step = algorithm.meta_step(params, supports, query)
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
    result.params = params
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
        episodes = rollout(env, params, tasks, rollouts, generator)
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

        step = trpo_step(params, loss_and_kl, trpo)
        ret = episodes.returns().mean().item()
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
                episodes.steps,
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
) -> Evaluation:
    """The mean return on `tasks` after 0, 1, …, `steps` policy-gradient steps, each step on
    fresh episodes of the current policy; the first step with `lr_first`, later ones with
    `lr_after` (the original MAML test script halves the step size after the first step).
    `observe` is shown the episodes of every step (for trajectory plots)."""
    per_task = []
    fast = params
    supports: list[Batch] = []
    for step in range(steps + 1):
        episodes = rollout(env, fast, tasks, rollouts, generator)
        if observe:
            observe(episodes)
        per_task.append(episodes.returns().mean(-1))
        if step == steps:
            break
        supports.append(to_batch(episodes, gamma=gamma, gae_lambda=gae_lambda))
        lrs = [lr_first] + [lr_after] * (len(supports) - 1)
        with torch.no_grad():
            fast = inner_adapt(params, supports, lrs, first_order=True)
    table = torch.stack(per_task)
    ci = 1.96 * table.std(-1) / math.sqrt(table.shape[-1])
    return Evaluation(table.mean(-1), ci, table)
