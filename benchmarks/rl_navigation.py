"""MAML-TRPO on 2D navigation (Finn et al. 2017, §5.3): the return after 0–3 policy-gradient
steps on new goals, for MAML, a randomly initialised policy and a policy pre-trained on all
tasks jointly (the paper's App. C table: MAML −40.41, −11.68, −3.33, −3.23).

Training runs in chunks of `--budget` seconds that continue from `--state`, so a long run is a
series of short commands:

    python benchmarks/rl_navigation.py --state runs/rl-nav.pt --budget 180   # repeat
    python benchmarks/rl_navigation.py --state runs/rl-nav.pt --budget 0 --pretrain-budget 120

Each call then evaluates the best MAML policy seen so far (as the paper does), the random
initialisation and, when trained, the pre-trained policy on 40 "test" goals with 40 episodes
per step, first step size 0.1 and 0.05 after it.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from metagrad.rl import (
    MAMLTRPO,
    Navigation2D,
    evaluate,
    init_policy,
    train_navigation,
    train_pretrained,
)
from metagrad.rl.train import IterationMetrics
from metagrad.tasks.seeding import task_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", type=Path, required=True, help="created, then continued")
    parser.add_argument("--budget", type=float, default=180.0, help="MAML training seconds")
    parser.add_argument("--pretrain-budget", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first-order", action="store_true")
    parser.add_argument("--eval-tasks", type=int, default=40)
    parser.add_argument("--eval-rollouts", type=int, default=40)
    args = parser.parse_args()

    env = Navigation2D()
    state = torch.load(args.state) if args.state.exists() else {"seed": args.seed}
    seed = state["seed"]
    if args.budget > 0:
        algorithm = MAMLTRPO(first_order=args.first_order)

        def log(m: IterationMetrics) -> None:
            print(
                f"iter {m.iteration:4d}  pre {m.pre_return:8.2f}  post {m.post_return:8.2f}  "
                f"kl {m.kl:.4f}  step {m.fraction:.3f}  {m.seconds:.2f}s "
                f"(sampling {m.sampling_seconds:.2f}s)",
                flush=True,
            )

        run = train_navigation(
            10**9,
            seed,
            algorithm=algorithm,
            env=env,
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
            10**9,
            seed,
            env=env,
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
    torch.save(state, args.state)

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
        "random init": init_policy(2, 2, generator=task_generator(seed, "train", 2**31 - 1)),
    }
    if "maml_best" in state:
        policies["MAML (best)"] = state["maml_best"]
        policies["MAML (last)"] = state["maml"]
    if "pretrained" in state:
        policies["pretrained"] = state["pretrained"]
    goals = env.goals(seed, "test", 0, args.eval_tasks)
    print(
        f"\nreturn after k PG steps, {args.eval_tasks} test goals, {args.eval_rollouts} episodes "
        "per step, mean ± 95% CI over goals"
    )
    print(f"{'policy':<14}" + "".join(f"{f'k={k}':>18}" for k in range(4)))
    for name, params in policies.items():
        began = time.perf_counter()
        result = evaluate(
            params,
            env,
            goals,
            rollouts=args.eval_rollouts,
            steps=3,
            generator=task_generator(seed, "test", 1),
        )
        pairs = zip(result.returns.tolist(), result.ci95.tolist(), strict=True)
        cells = "".join(f"{m:>11.2f} ± {c:4.2f}" for m, c in pairs)
        print(f"{name:<14}{cells}   ({time.perf_counter() - began:.1f} s)")
    print(f"{'paper (MAML)':<14}" + "".join(f"{v:>18.2f}" for v in (-40.41, -11.68, -3.33, -3.23)))


if __name__ == "__main__":
    main()
