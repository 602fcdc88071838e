"""MAML-TRPO (Finn et al. 2017, §5.3) on 2D navigation, HalfCheetah or Ant direction / velocity: the
return after 0–3 policy-gradient steps on new tasks, for MAML, a randomly initialised policy and
a policy pre-trained on all tasks jointly (the paper's App. C table for navigation: MAML −40.41,
−11.68, −3.33, −3.23; HalfCheetah is reported as curves, Figure 5).

Training runs in chunks of `--budget` seconds that continue from `--state`, so a long run is a
series of short commands:

    python benchmarks/rl_maml.py --state runs/rl-nav.pt --budget 180  # repeat
    python benchmarks/rl_maml.py --state runs/rl-nav.pt --budget 0 --pretrain-budget 120
    python benchmarks/rl_maml.py --env halfcheetah-dir --state runs/rl-dir.pt --budget 600
    python benchmarks/rl_maml.py --state runs/rl-nav-code.pt \
        --inner-lr 0.5 --eval-lr 0.5 0.25 --budget 330   # the original code's navigation run

Each call then evaluates the best MAML policy seen so far (as the paper does), the random
initialisation and, when trained, the pre-trained policy on 40 "test" tasks with 40 episodes
per step, first step size 0.1 and 0.05 after it. It prints environment steps per second.

Navigation acts as the presets do (rllab's `normalize`: actions in [−1, 1] scaled to ±0.1);
`--raw-actions` clips the raw action to ±0.1 instead, as pytorch-maml-rl does.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import torch

from metagrad.execution.allocator import tune_allocator
from metagrad.rl import (
    MAMLTRPO,
    Navigation2D,
    TaskEnvironment,
    evaluate,
    fixed_tasks,
    init_policy,
    train_maml,
    train_pretrained,
)
from metagrad.rl.train import IterationMetrics
from metagrad.tasks.seeding import task_generator

PAPER = {"navigation": (-40.41, -11.68, -3.33, -3.23)}
META_BATCH = {
    "navigation": 20,
    "halfcheetah-dir": 40,
    "halfcheetah-vel": 40,
    "ant-dir": 40,
    "ant-vel": 40,
}


def environment(name: str, horizon: int | None, normalized: bool) -> TaskEnvironment:
    if name == "navigation":
        return Navigation2D(horizon=horizon or 100, normalized_actions=normalized)
    from metagrad.rl import AntTasks, HalfCheetahTasks

    tasks = AntTasks if name.startswith("ant-") else HalfCheetahTasks
    kind = "direction" if name.endswith("-dir") else "velocity"
    return tasks(kind, horizon=horizon or 200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", choices=sorted(META_BATCH), default="navigation")
    parser.add_argument("--horizon", type=int, help="default: the paper's (100; cheetah 200)")
    parser.add_argument("--meta-batch", type=int, help="tasks per iteration (paper: 20; 40)")
    parser.add_argument("--rollouts", type=int, default=20, help="episodes per task and step")
    parser.add_argument("--state", type=Path, required=True, help="created, then continued")
    parser.add_argument("--budget", type=float, default=180.0, help="MAML training seconds")
    parser.add_argument("--pretrain-budget", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first-order", action="store_true")
    parser.add_argument("--eval-tasks", type=int, default=40)
    parser.add_argument("--eval-rollouts", type=int, default=40)
    parser.add_argument("--inner-lr", type=float, default=0.1, help="α in training (paper 0.1)")
    parser.add_argument(
        "--eval-lr",
        type=float,
        nargs=2,
        default=(0.1, 0.05),
        metavar=("FIRST", "AFTER"),
        help="test step sizes: the first step's and the later ones' (paper: 0.1, 0.05)",
    )
    parser.add_argument(
        "--raw-actions",
        action="store_true",
        help="navigation: the raw action clipped to ±0.1 (pytorch-maml-rl), not [-1, 1] scaled "
        "to ±0.1 (rllab's normalize, the presets')",
    )
    args = parser.parse_args()
    tune_allocator()  # as the `metagrad` command does

    normalized = args.env == "navigation" and not args.raw_actions
    env = environment(args.env, args.horizon, normalized)
    meta_batch = args.meta_batch or META_BATCH[args.env]
    setting = {
        "env": args.env,
        "normalized_actions": normalized,
        "inner_lr": args.inner_lr,
    }
    state = {**setting, "seed": args.seed}
    if args.state.exists():
        state = torch.load(args.state, weights_only=True)
        held = {"env": state.get("env", "navigation")}
        held["normalized_actions"] = state.get("normalized_actions", False)
        held["inner_lr"] = state.get("inner_lr", 0.1)
        if held != setting:
            parser.error(f"{args.state} holds a run of {held}, not {setting}")
    seed = state["seed"]
    if args.budget > 0:
        algorithm = MAMLTRPO(inner_lr=args.inner_lr, first_order=args.first_order)

        def log(m: IterationMetrics) -> None:
            print(
                f"iter {m.iteration:4d}  pre {m.pre_return:8.2f}  post {m.post_return:8.2f}  "
                f"kl {m.kl:.4f}  step {m.fraction:.3f}  {m.seconds:.2f}s "
                f"(sampling {m.sampling_seconds:.2f}s)",
                flush=True,
            )

        run = train_maml(
            env,
            10**9,
            seed,
            meta_batch=meta_batch,
            rollouts=args.rollouts,
            algorithm=algorithm,
            time_budget=args.budget,
            params=state.get("maml"),
            start=state.get("maml_iterations", 0),
            log=log,
        )
        history = [dataclasses.asdict(m) for m in run.history]
        state["maml_history"] = state.get("maml_history", []) + history
        state["maml"] = run.params
        state["maml_iterations"] = state.get("maml_iterations", 0) + len(run.history)
        if run.best_return > state.get("maml_best_return", -float("inf")):
            state["maml_best"], state["maml_best_return"] = run.best_params, run.best_return
    if args.pretrain_budget > 0:
        run = train_pretrained(
            env,
            10**9,
            seed,
            meta_batch=meta_batch,
            rollouts=args.rollouts,
            time_budget=args.pretrain_budget,
            params=state.get("pretrained"),
            start=state.get("pretrained_iterations", 0),
        )
        state["pretrained"] = run.params
        state["pretrained_iterations"] = state.get("pretrained_iterations", 0) + len(run.history)
        print(
            f"pre-trained: {len(run.history)} iterations, last return "
            f"{run.history[-1].pre_return:.2f}"
        )
    args.state.parent.mkdir(parents=True, exist_ok=True)
    partial = args.state.with_name(f".{args.state.name}.tmp")
    torch.save(state, partial)
    os.replace(partial, args.state)  # a kill while saving leaves the previous state whole

    history = state.get("maml_history", [])
    if history:
        seconds = sum(m["seconds"] for m in history)
        sampling = sum(m["sampling_seconds"] for m in history)
        steps = sum(m["env_steps"] for m in history)
        print(
            f"\nMAML: {len(history)} meta-iterations in {seconds:.0f} s "
            f"({seconds / len(history):.2f} s each; sampling {sampling / len(history):.2f} s, "
            f"{steps / sampling:,.0f} env steps/s while sampling, "
            f"{steps / seconds:,.0f} env steps/s overall); best post-adaptation training "
            f"return {state['maml_best_return']:.2f}"
        )
    policies = {
        "random init": init_policy(
            env.observation_size,
            env.action_size,
            generator=task_generator(seed, "train", 2**31 - 1),
        ),
    }
    if "maml_best" in state:
        policies["MAML (best)"] = state["maml_best"]
        policies["MAML (last)"] = state["maml"]
    if "pretrained" in state:
        policies["pretrained"] = state["pretrained"]
    tasks = fixed_tasks(env, seed, "test", 0, args.eval_tasks)
    print(
        f"\nreturn after k PG steps, {args.eval_tasks} test tasks, {args.eval_rollouts} episodes "
        f"per step, step sizes {args.eval_lr[0]:g} then {args.eval_lr[1]:g}, mean ± 95% CI over "
        "tasks"
    )
    print(f"{'policy':<14}" + "".join(f"{f'k={k}':>18}" for k in range(4)))
    for name, params in policies.items():
        began = time.perf_counter()
        result = evaluate(
            params,
            env,
            tasks,
            rollouts=args.eval_rollouts,
            steps=3,
            lr_first=args.eval_lr[0],
            lr_after=args.eval_lr[1],
            generator=task_generator(seed, "test", 1),
        )
        pairs = zip(result.returns.tolist(), result.ci95.tolist(), strict=True)
        cells = "".join(f"{m:>11.2f} ± {c:4.2f}" for m, c in pairs)
        print(f"{name:<14}{cells}   ({time.perf_counter() - began:.1f} s)")
    if args.env in PAPER:
        print(f"{'paper (MAML)':<14}" + "".join(f"{v:>18.2f}" for v in PAPER[args.env]))


if __name__ == "__main__":
    main()
