"""One benchmark measurement in a process of its own: `python -m metagrad.bench.worker SPEC`.

A process per approach keeps peak memory (`ru_maxrss`) and allocator state separate, so each
approach is measured as if it ran alone.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

from metagrad.algorithms import build_algorithm
from metagrad.bench.peers import PEERS
from metagrad.bench.settings import setting_config, synthetic_batch
from metagrad.build import build_tasks, image_channels, init_model, objective_for, resolve_device
from metagrad.config import Config, parse_size
from metagrad.data.class_images import ClassImages
from metagrad.execution import ExecutionPlan, MetaLearner
from metagrad.execution.allocator import tune_allocator
from metagrad.execution.memory import peak_rss, reset_peak_rss
from metagrad.tasks.batch import TaskBatch
from metagrad.tasks.sampler import EpisodeSampler
from metagrad.train import planned_execution

Step = Callable[[], list[torch.Tensor]]

PLAN_BUDGET = "8GiB"
"""The memory budget of the `planned` approach when the setting has no train.max_memory."""

SAMPLER_CLASSES = {"omniglot": 4400, "miniimagenet": 64}
"""Meta-training classes of the datasets whose sampling the `sampler` approach times."""


def metagrad_step(config: Config, batch: TaskBatch, approach: str) -> tuple[Step, dict]:
    """metagrad's meta-step run as `approach`: a strategy ("loop"), with a chunk size
    ("vmap/4"), with inner-step checkpointing ("loop+checkpoint"), "auto" (the fastest
    strategy, measured), or "planned" (the fastest within `train.max_memory`, measured). The
    info of the last two names what they chose, as an approach ("chosen")."""
    approach, _, checkpoint = approach.partition("+")
    strategy, _, chunk = approach.partition("/")
    plan = ExecutionPlan(
        "auto" if strategy == "planned" else strategy,
        int(chunk) if chunk else config.train.chunk_size,
        bool(checkpoint) or config.train.checkpoint_inner,
    )
    learner = MetaLearner(
        build_algorithm(config), _model(config, batch), objective_for(config), plan
    )
    info: dict = {}
    if strategy == "planned":  # as `metagrad train` chooses, on this batch
        learner.plan = planned_execution(learner, batch, config)
        info["budget_mib"] = parse_size(config.train.max_memory) / 2**20
    learner.choose_plan(batch)  # auto: as `metagrad train` chooses, on this batch
    if strategy in ("auto", "planned"):
        plan = learner.plan
        chosen = plan.strategy + (f"/{plan.chunk_size}" if plan.chunk_size else "")
        info["chosen"] = chosen + ("+checkpoint" if plan.checkpoint_inner else "")

    def step() -> list[torch.Tensor]:
        return list(learner.meta_gradient(batch)[0].named().values())

    return step, info


def peer_step(config: Config, batch: TaskBatch, approach: str) -> tuple[Step, dict]:
    return PEERS[approach](_model(config, batch), config, batch, objective_for(config).loss), {}


def _model(config: Config, batch: TaskBatch) -> torch.nn.Module:
    """The seeded initial network, on the batch's device and in its precision."""
    return init_model(config).to(batch.x_support.device, batch.x_support.dtype)


def sampler_step(config: Config, device: torch.device) -> tuple[Step, dict]:
    """Drawing one meta-batch from an in-memory dataset of the setting's shapes (noise pixels)."""
    task = config.task
    if task.dataset == "sinusoid":
        tasks = build_tasks(config, device)
    else:
        shape = (SAMPLER_CLASSES.get(task.dataset, 64), 20 if task.dataset == "omniglot" else 600)
        size = (*shape, image_channels(config), task.image_size, task.image_size)
        pixels = torch.randint(0, 256, size, dtype=torch.uint8)
        images = ClassImages(pixels, [str(c) for c in range(shape[0])])
        tasks = EpisodeSampler({"train": images.to(device)}, task.n_way, task.k_shot, task.n_query)
    counter = iter(range(1 << 30))

    def step() -> list[torch.Tensor]:
        return list(tasks.sample("train", next(counter), config.train.meta_batch_size).tensors())

    return step, {}


def measure(spec: dict) -> dict:
    overrides = list(spec.get("overrides", ()))
    config = setting_config(spec["setting"], overrides)
    if spec["approach"] == "planned" and config.train.max_memory is None:
        config = setting_config(spec["setting"], [*overrides, f"train.max_memory={PLAN_BUDGET}"])
    device = resolve_device(spec.get("device", "cpu"))
    approach = spec["approach"]
    batch = synthetic_batch(config, device)
    build = peer_step if approach in PEERS else metagrad_step
    if approach == "sampler":
        step, info = sampler_step(config, device)
    else:
        step, info = build(config, batch, approach)
    rss_before = reset_peak_rss() / 2**20  # planning and probing not counted
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(spec.get("warmup", 2)):
        step()
    seconds = []
    for _ in range(spec.get("repeats", 10)):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    peak = peak_rss() / 2**20
    if approach != "sampler" and spec.get("check", True):  # float64: exact methods agree
        chosen = info.get("chosen", approach)  # auto, planned: what they chose
        exact, _ = build(config, batch.to(device, torch.float64), chosen)
        torch.save([g.detach().cpu() for g in exact()], spec["grads_file"])
    result = {
        **spec,
        **info,
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "tasks_per_s": config.train.meta_batch_size / statistics.median(seconds),
        "peak_rss_mib": peak,
        "work_mib": peak - rss_before,
        "threads": torch.get_num_threads(),
        "pid": os.getpid(),
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    tune_allocator()
    print(json.dumps(measure(json.loads(sys.argv[1]))))
