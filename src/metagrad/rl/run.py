"""Meta-RL runs from a config: `metagrad train`, `eval` and `plot` for the environments.

The same run folder as a supervised run (config, metrics, TensorBoard, atomic checkpoints, a
lock, exact resume). Meta-iteration i uses the tasks, initial states and action noise of
`task_generator(seed, "train", i)`, so a checkpoint needs only the policy, the iteration and the
best policy so far to continue as if never stopped. As in the paper, the policy that is
evaluated is the one of the training iteration with the best return after adaptation (the
`best` checkpoint), on `eval.num_tasks` fixed tasks of the "test" split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore
from metagrad.config import Config
from metagrad.errors import Interrupted, NonFiniteError
from metagrad.execution.distributed import SINGLE, World, init_world, world
from metagrad.interrupt import GracefulStop
from metagrad.logging import RunLogger
from metagrad.models.functional import Params
from metagrad.rl.environment import TaskEnvironment, fixed_tasks
from metagrad.rl.maml_trpo import MAMLTRPO, Evaluation
from metagrad.rl.navigation import Navigation2D
from metagrad.rl.policy import init_policy
from metagrad.rl.ppo import PPO
from metagrad.rl.sampling import Episodes
from metagrad.rl.train import (
    IterationMetrics,
    TrainResult,
    evaluate,
    train_maml,
    train_pretrained,
)
from metagrad.rl.trpo import TRPO
from metagrad.runs import check_run_dir, init_run_dir
from metagrad.tasks.seeding import task_generator


def make_environment(config: Config) -> TaskEnvironment:
    """The task environment `task.dataset` names, with `rl.horizon` steps per episode (by
    default the paper's: 100 for navigation, 200 for the MuJoCo tasks)."""
    dataset = config.task.dataset
    horizon = config.rl.horizon or (100 if dataset == "navigation2d" else 200)
    if dataset == "navigation2d":
        return Navigation2D(horizon=horizon, normalized_actions=config.rl.normalized_actions)
    # Gymnasium and MuJoCo: the [rl] extra
    if dataset.startswith("ant-"):
        from metagrad.rl.ant import AntTasks as Tasks
    else:
        from metagrad.rl.cheetah import HalfCheetahTasks as Tasks
    kind = "direction" if dataset.endswith("-dir") else "velocity"
    return Tasks(kind, horizon=horizon, vectorization=config.rl.vectorization)


def make_algorithm(config: Config) -> MAMLTRPO:
    rl, algorithm = config.rl, config.algorithm
    return MAMLTRPO(
        inner_lr=algorithm.inner_lr,
        inner_steps=algorithm.inner_steps,
        first_order=algorithm.first_order,
        gamma=rl.gamma,
        gae_lambda=rl.gae_lambda,
        trpo=TRPO(max_kl=rl.max_kl, cg_iterations=rl.cg_iterations, damping=rl.damping),
        ppo=PPO(rl.ppo_clip, rl.ppo_epochs, rl.ppo_lr) if rl.outer == "ppo" else None,
        lvc=rl.inner_estimator == "lvc",
        inner_kl_penalty=rl.inner_kl_penalty,
    )


def iteration_of(config: Config, world: World = SINGLE) -> Callable[..., TrainResult]:
    """`iteration(env, params=θ, start=i)`: meta-iteration i of the run's algorithm from θ.
    `maml`: MAML-TRPO; `pretrain`: the paper's pre-trained baseline, one policy trained by TRPO
    on the tasks of each meta-batch jointly, without adaptation."""
    settings, rl = config.train, config.rl
    common = {"meta_batch": settings.meta_batch_size, "rollouts": rl.rollouts, "world": world}
    algorithm = make_algorithm(config)
    if config.algorithm.name == "pretrain":
        return functools.partial(
            train_pretrained,
            iterations=1,
            seed=settings.seed,
            gamma=rl.gamma,
            gae_lambda=rl.gae_lambda,
            trpo=algorithm.trpo,
            **common,
        )
    return functools.partial(
        train_maml, iterations=1, seed=settings.seed, algorithm=algorithm, **common
    )


def initial_policy(config: Config, env: TaskEnvironment) -> Params:
    """The seeded initial policy (a Gaussian MLP of `model.hidden` widths)."""
    return init_policy(
        env.observation_size,
        env.action_size,
        config.model.hidden,
        init_std=config.rl.init_std,
        generator=task_generator(config.train.seed, "train", 2**31 - 1),
    )


def fit_rl(
    config: Config,
    run_dir: Path,
    hold: contextlib.ExitStack,
    *,
    resume: bool,
    overwrite: bool,
    progress: bool,
) -> Path:
    """Meta-train the policy of `config` in `run_dir`; see the module docstring. Under
    `torchrun` the processes share each meta-batch's tasks (gloo: rollouts run on CPUs) and
    rank 0 holds the run folder, as in supervised runs."""
    world = init_world(torch.device("cpu"))
    world.on_main(lambda: check_run_dir(run_dir, config, resume=resume, overwrite=overwrite))
    settings = config.train
    world.check_meta_batch(settings.meta_batch_size)
    progress = progress and world.is_main
    print(f"building the {config.task.dataset} environment and the policy", flush=True)
    env = make_environment(config)
    train_iteration = iteration_of(config, world)
    params = initial_policy(config, env)
    state = world.on_main(
        lambda: init_run_dir(run_dir, config, resume=resume, overwrite=overwrite, hold=hold)
    )
    start, elapsed = 0, 0.0
    best: dict | None = None
    best_params = params
    outer_state: dict | None = None  # PPO's Adam moments
    window: list[IterationMetrics] = []  # the iterations since the last log line
    if state is not None:
        params, best_params = state["params"], state["best_params"]
        outer_state = state.get("outer_state")
        start, elapsed, best = state["step"], state["elapsed"], state["best"]
        window = [IterationMetrics(**entry) for entry in state["window"]]
    store = CheckpointStore(run_dir / CHECKPOINT_DIR, keep=settings.keep_checkpoints)
    if world.is_main:
        store.remove_temporary()
    resume_step = start if state is not None else None
    logger = RunLogger(run_dir, resume_step=resume_step, silent=not world.is_main)

    def checkpoint(kind: str, step: int) -> None:
        saved = {
            "step": step,
            "params": params,
            "best_params": best_params,
            "outer_state": outer_state,
            "best": best,
            "elapsed": elapsed,
            "window": [dataclasses.asdict(entry) for entry in window],
            "config": config.to_dict(),
            "fingerprint": config.fingerprint(),
        }
        if world.is_main:
            store.save(kind, step, saved)
        world.barrier()  # no process reads a checkpoint before it is whole

    checkpoint("step", start)
    budget = f", time budget {settings.time_budget:g} s" if settings.time_budget else ""
    print(f"training from iteration {start} to {settings.iterations}{budget} in {run_dir}")
    bar = tqdm(range(start, settings.iterations), desc=config.name, disable=not progress)
    with GracefulStop() as stop:
        for iteration in bar:
            carried = {"outer_state": outer_state} if outer_state is not None else {}
            result = train_iteration(env, params=params, start=iteration, **carried)
            metrics = result.history[0]
            _check_finite(iteration, metrics, result.params)
            if best is None or metrics.post_return > best["value"]:
                best, best_params = {"step": iteration, "value": metrics.post_return}, params
                checkpoint("best", iteration)  # the state this iteration started from
            params, outer_state = result.params, result.outer_state
            (elapsed,) = world.agree(elapsed + metrics.seconds)  # the slowest process's clock
            window.append(metrics)

            done = iteration + 1
            final = done == settings.iterations or elapsed >= (settings.time_budget or math.inf)
            if done % settings.log_every == 0 or final or stop.requested:
                logger.log(done, "train", _means(window))
                bar.set_postfix(post_return=f"{window[-1].post_return:.2f}")
                if not progress:
                    print(
                        f"iteration {done}/{settings.iterations} ({elapsed:.0f} s): "
                        f"return {window[-1].pre_return:.2f} before adaptation, "
                        f"{window[-1].post_return:.2f} after"
                    )
                window.clear()
                world.check_same(list(params.values()), done)
            (requested,) = world.agree(stop.requested or 0)  # any process's signal stops all
            if done % settings.ckpt_every == 0 or final or requested:
                checkpoint("step", done)
            if requested:
                logger.close()
                stopped = Interrupted(int(requested), saved=True, step=done, run=str(run_dir))
                stopped.shared = True
                raise stopped
            if final:
                break
    logger.close()
    return run_dir


def _means(window: list[IterationMetrics]) -> dict[str, float]:
    """The logged training metrics: returns before (θ, support episodes) and after adaptation
    (φ, query episodes), the TRPO step, and the sampling speed."""
    count = len(window)
    seconds = sum(m.seconds for m in window)
    sampling = sum(m.sampling_seconds for m in window)
    return {
        "support_return": sum(m.pre_return for m in window) / count,
        "query_return": sum(m.post_return for m in window) / count,
        "kl": sum(m.kl for m in window) / count,
        "step_fraction": sum(m.fraction for m in window) / count,
        "env_steps_per_s": sum(m.env_steps for m in window) / sampling,
        "seconds_per_iteration": seconds / count,
    }


def _check_finite(iteration: int, metrics: IterationMetrics, params: Params) -> None:
    bad = [name for name, value in params.items() if not torch.isfinite(value).all()]
    if bad or not math.isfinite(metrics.post_return):
        raise NonFiniteError(
            f"non-finite values at iteration {iteration}: policy parameters {bad or 'none'}, "
            f"return after adaptation {metrics.post_return}. The last checkpoint is intact; "
            "lower algorithm.inner_lr or rl.max_kl."
        )


def evaluate_policy(config: Config, params: Params, split: str = "test") -> dict:
    """The return (mean ± 95% CI over `eval.num_tasks` fixed tasks of `split`) after
    0..`eval.inner_steps` policy-gradient steps, for `params` and, beside it, the randomly
    initialised policy."""
    env = make_environment(config)
    tasks = fixed_tasks(env, config.train.seed, split, 0, config.eval.num_tasks)
    results = {
        name: _protocol(config, env, policy, tasks, split)
        for name, policy in (
            ("return", params),
            ("random_init_return", initial_policy(config, env)),
        )
    }
    return {
        "num_tasks": config.eval.num_tasks,
        "episodes": config.rl.eval_rollouts,
        "inner_lr": [_first_lr(config), config.rl.eval_lr_after],
        "inner_steps": config.eval.inner_steps,
        "mean": {k: e.returns.tolist() for k, e in results.items()},
        "ci95": {k: e.ci95.tolist() for k, e in results.items()},
    }


def trajectories(config: Config, params: Params, num_tasks: int) -> tuple[torch.Tensor, list]:
    """Navigation: the goals of the first `num_tasks` test tasks, and the positions of one
    episode per task `[T, H, 2]` before adaptation and after each policy-gradient step of the
    evaluation protocol (the paper's Figure 6)."""
    env = make_environment(config)
    tasks = fixed_tasks(env, config.train.seed, "test", 0, num_tasks)
    shown: list[torch.Tensor] = []
    _protocol(config, env, params, tasks, "test", lambda e: shown.append(_positions(e)))
    return tasks, shown


def _protocol(
    config: Config,
    env: TaskEnvironment,
    params: Params,
    tasks: torch.Tensor,
    split: str,
    observe: Callable[[Episodes], object] | None = None,
) -> Evaluation:
    """`evaluate` with the run's test-time settings."""
    return evaluate(
        params,
        env,
        tasks,
        rollouts=config.rl.eval_rollouts,
        steps=config.eval.inner_steps,
        lr_first=_first_lr(config),
        lr_after=config.rl.eval_lr_after,
        gamma=config.rl.gamma,
        gae_lambda=config.rl.gae_lambda,
        generator=task_generator(config.train.seed, split, 1),
        observe=observe,
        world=world(),  # under torchrun, each process evaluates its part of the tasks
    )


def _first_lr(config: Config) -> float:
    return config.eval.inner_lr or config.algorithm.inner_lr


def _positions(episodes: Episodes) -> torch.Tensor:
    """The first episode of each task, its observations where the episode ran `[T, H, 2]`."""
    observations = episodes.observations[:, 0]
    return observations.masked_fill(episodes.mask[:, 0, :, None] == 0, float("nan"))
