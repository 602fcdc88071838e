"""HalfCheetah sampling speed: one meta-batch of episodes (40 tasks × 20 episodes × 200 steps,
the paper's) with a 2×100 policy, stepped each way `HalfCheetahTasks` offers, in one process.
Prints environment steps per second, the policy's sampling included, and the ratio to
Gymnasium's `SyncVectorEnv`; the episodes are the same each way.

    python benchmarks/rl_sampling.py                      # sync, then threads
    python benchmarks/rl_sampling.py --ways sync threads async --tasks 4
"""

from __future__ import annotations

import argparse
import time

import torch

from metagrad.rl import HalfCheetahTasks, init_policy
from metagrad.rl.sampling import rollout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ways", nargs="+", default=["sync", "threads"])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--rollouts", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    params = init_policy(20, 6, (100, 100), generator=torch.Generator().manual_seed(0))
    tasks = HalfCheetahTasks().sample_tasks(torch.Generator().manual_seed(0), args.tasks)
    print(
        f"{args.tasks} tasks × {args.rollouts} episodes × {args.horizon} steps, "
        f"{torch.get_num_threads()} torch threads; best of {args.repeats}"
    )
    print(f"{'vectorization':<14}{'steps/s':>12}{'vs sync':>10}")
    speeds = {}
    for way in args.ways:
        env = HalfCheetahTasks("direction", horizon=args.horizon, vectorization=way)
        rollout(env, params, tasks, args.rollouts, torch.Generator().manual_seed(1))  # warm-up
        best = 0.0
        for repeat in range(args.repeats):
            began = time.perf_counter()
            episodes = rollout(
                env, params, tasks, args.rollouts, torch.Generator().manual_seed(repeat)
            )
            best = max(best, episodes.steps / (time.perf_counter() - began))
        env.close()
        speeds[way] = best
        ratio = f"{best / speeds['sync']:.2f}×" if "sync" in speeds else ""
        print(f"{way:<14}{best:>12,.0f}{ratio:>10}", flush=True)


if __name__ == "__main__":
    main()
