"""Tasks per second of meta-training on 1, 2, … processes (torchrun, gloo on the CPU, NCCL on
GPUs), with the scaling efficiency and the time one step spends combining the meta-gradient.

    python benchmarks/scaling.py omniglot-5w1s --procs 1 2 [--threads 1] [--steps 10]
    python benchmarks/scaling.py maml-trpo-navigation2d --procs 1 2 --steps 10   # meta-RL

Each row is one `torchrun --standalone --nproc-per-node P` group running `--steps` timed
meta-steps (after one untimed) of the same global meta-batch, split between the processes as
`metagrad train` splits it, each process with `--threads` threads (OMP_NUM_THREADS; torchrun's
default is 1). Efficiency is tasks/s over P times the first row's tasks/s per process.
`communication` is the time of the all-reduce of the flat meta-gradient and the gather of the
metrics alone, measured the same way.

A meta-RL preset times whole meta-iterations (rollouts of each process's tasks, then the TRPO or
PPO step on them); its `communication` is the time spent in the all-reduces of the surrogate,
KL, gradient and Fisher-vector products, waiting for the slower process included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from metagrad.config import load_config, preset_names
from metagrad.execution.distributed import exit_process


def worker(setting: str, steps: int) -> None:
    """One process of the group: time meta-steps and the collectives; rank 0 prints JSON."""
    from metagrad.bench.settings import setting_config, synthetic_batch
    from metagrad.bench.worker import metagrad_step
    from metagrad.execution.distributed import init_world, world

    init_world(torch.device("cpu"))
    config = setting_config(setting)
    batch = synthetic_batch(config)
    step, info = metagrad_step(config, batch, config.train.strategy)
    grads = step()  # chooses the plan, warms up

    def timed(fn) -> float:
        times = []
        for _ in range(steps):
            world().barrier()
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    local = world().local(batch)
    metrics = {"loss": torch.zeros(local.num_tasks), "accuracy": torch.zeros(local.num_tasks)}
    seconds = timed(step)
    communication = 0.0  # one process combines nothing
    if world().size > 1:
        communication = timed(lambda: world().combine(grads, metrics, batch.num_tasks))
    if world().is_main:
        row = {"procs": world().size, "tasks": batch.num_tasks, "seconds": seconds}
        print(json.dumps({**row, "communication": communication, **info}))


def rl_worker(preset: str, steps: int) -> None:
    """One process of a meta-RL group: time meta-iterations; rank 0 prints JSON."""
    from metagrad.config import load_config
    from metagrad.execution import distributed
    from metagrad.rl.run import initial_policy, iteration_of, make_environment

    world = distributed.init_world(torch.device("cpu"))
    config = load_config(preset)
    env = make_environment(config)
    iteration = iteration_of(config, world)
    params, state = initial_policy(config, env), {}
    spent = [0.0]
    reduce = distributed._all_reduce_sum

    def timed_reduce(tensor: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = reduce(tensor)
        spent[0] += time.perf_counter() - start
        return out

    distributed._all_reduce_sum = timed_reduce
    seconds, communication = [], []
    for index in range(steps + 1):  # the first one untimed
        world.barrier()
        spent[0], start = 0.0, time.perf_counter()
        result = iteration(env, params=params, start=index, **state)
        params = result.params
        state = {"outer_state": result.outer_state} if result.outer_state is not None else {}
        if index:
            seconds.append(time.perf_counter() - start)
            communication.append(spent[0])
    if world.is_main:
        row = {"procs": world.size, "tasks": config.train.meta_batch_size}
        row |= {"seconds": statistics.median(seconds)}
        print(json.dumps({**row, "communication": statistics.median(communication)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "setting",
        help="a `metagrad bench` setting, e.g. omniglot-5w1s, or a meta-RL preset",
    )
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="threads per process")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        rl = args.setting in preset_names() and load_config(args.setting).is_rl
        (rl_worker if rl else worker)(args.setting, args.steps)
        exit_process(0)
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for procs in args.procs:
        command = [
            *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
            f"--nproc-per-node={procs}",
            __file__,
            args.setting,
            f"--steps={args.steps}",
            "--worker",
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = rows[0]["tasks"] / rows[0]["seconds"] / rows[0]["procs"]
    threads = f"{args.threads} thread{'s' * (args.threads > 1)} per process"
    print(f"{args.setting}: {rows[0]['tasks']} tasks per meta-batch, {threads}\n")
    print("| processes | s per meta-step | tasks/s | efficiency | communication per step |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        rate = row["tasks"] / row["seconds"]
        efficiency = rate / (base * row["procs"])
        print(
            f"| {row['procs']} | {row['seconds']:.3f} | {rate:.1f} | {efficiency:.0%} "
            f"| {row['communication'] * 1e3:.2f} ms |"
        )


if __name__ == "__main__":
    main()
