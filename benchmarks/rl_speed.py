"""Where a HalfCheetah (or Ant) direction meta-iteration of the paper's size spends its time: 40
tasks × 20 episodes × 200 steps, a 2×100 policy, one inner step, TRPO with 10 conjugate-gradient
iterations.

It prints the sampling speed of one meta-batch of episodes for each way of stepping them
(`HalfCheetahTasks`' vectorization: the same episodes each way; ratios to Gymnasium's
`SyncVectorEnv`), then times the meta-step (second order) on those episodes: its
Fisher-vector products and its line search. Best of `--repeats`; the allocator is tuned as by
the `metagrad` command.

    python benchmarks/rl_speed.py
    python benchmarks/rl_speed.py --env ant --ways sync threads --repeats 1
    PYTHONPATH=OTHER/src python benchmarks/rl_speed.py --ways sync   # another source tree
"""

from __future__ import annotations

import argparse
import time

import torch

import metagrad.rl.trpo as trpo
from metagrad.execution.allocator import tune_allocator
from metagrad.rl import MAMLTRPO, init_policy
from metagrad.rl.sampling import rollout, to_batch


class Timed:
    """Counts the calls of `function` and the seconds spent in them."""

    def __init__(self) -> None:
        self.calls, self.seconds = 0, 0.0

    def wrap(self, function):
        def timed(*args):
            began = time.perf_counter()
            value = function(*args)
            self.calls, self.seconds = self.calls + 1, self.seconds + time.perf_counter() - began
            return value

        return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", choices=["halfcheetah", "ant"], default="halfcheetah")
    parser.add_argument("--ways", nargs="+", default=["sync", "threads"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    tune_allocator()

    if args.env == "ant":
        from metagrad.rl.ant import AntTasks as Tasks
    else:
        from metagrad.rl.cheetah import HalfCheetahTasks as Tasks
    sizes = (Tasks.observation_size, Tasks.action_size)
    params = init_policy(*sizes, (100, 100), generator=torch.Generator().manual_seed(0))
    tasks = Tasks().sample_tasks(torch.Generator().manual_seed(0), 40)
    algorithm = MAMLTRPO()
    print(f"{args.env}: 40 tasks × 20 episodes × 200 steps, {torch.get_num_threads()} threads")
    print(f"{'vectorization':<14}{'env steps/s':>12}{'vs sync':>10}")
    speeds = {}
    for way in args.ways:
        env = Tasks("direction", vectorization=way)
        rollout(env, params, tasks, 20, torch.Generator().manual_seed(9))  # warm-up
        best = 0.0
        for repeat in range(args.repeats):
            began = time.perf_counter()
            support = rollout(env, params, tasks, 20, torch.Generator().manual_seed(repeat))
            best = max(best, support.steps / (time.perf_counter() - began))
        with torch.no_grad():
            fast = algorithm.adapt(
                params, [to_batch(support, gamma=0.99, gae_lambda=1.0)], first_order=True
            )
        query = rollout(env, fast, tasks, 20, torch.Generator().manual_seed(7))
        env.close()
        speeds[way] = best
        ratio = f"{best / speeds['sync']:.2f}×" if "sync" in speeds else ""
        print(f"{way:<14}{best:>12,.0f}{ratio:>10}", flush=True)

    batches = [to_batch(e, gamma=0.99, gae_lambda=1.0) for e in (support, query)]
    conjugate_gradient, line_search = trpo.conjugate_gradient, trpo.line_search
    rows = []
    for _ in range(args.repeats):
        products, evaluations = Timed(), Timed()
        trpo.conjugate_gradient = lambda matvec, *rest, timed=products: conjugate_gradient(
            timed.wrap(matvec), *rest
        )
        trpo.line_search = lambda evaluate, *rest, timed=evaluations, **kw: line_search(
            timed.wrap(evaluate), *rest, **kw
        )
        began = time.perf_counter()
        algorithm.meta_step(params, batches[:1], batches[1])
        rows.append((time.perf_counter() - began, products, evaluations))
    seconds, products, evaluations = min(rows, key=lambda row: row[0])
    print(
        f"\nmeta-step (second order) {seconds:.2f} s: {products.calls} Fisher-vector products "
        f"in the conjugate gradient, {products.seconds / products.calls:.2f} s each; line search "
        f"{evaluations.calls} evaluation(s), {evaluations.seconds:.2f} s"
    )


if __name__ == "__main__":
    main()
