"""`fit()`: the outer loop of meta-training, readable top to bottom."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from tqdm import tqdm

from metagrad.build import TaskSource, build_learner, build_tasks, resolve_device
from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore
from metagrad.config import Config, parse_size
from metagrad.data.class_images import ClassImages
from metagrad.errors import ConfigError, Interrupted, NonFiniteError
from metagrad.evaluate import fixed_batches, protocol_metrics
from metagrad.execution import MetaLearner, plan_memory
from metagrad.execution.distributed import init_world, local_device
from metagrad.execution.memory import format_size
from metagrad.interrupt import GracefulStop
from metagrad.logging import RunLogger
from metagrad.models.functional import Params
from metagrad.rl.run import fit_rl
from metagrad.runs import check_run_dir, init_run_dir
from metagrad.tasks.batch import TaskBatch
from metagrad.tasks.sampler import EpisodeSampler


def fit(
    config: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    images: Mapping[str, ClassImages] | None = None,
) -> Path:
    """Meta-train `config` in `run_dir` (config, metrics, TensorBoard, checkpoints); return it.

    With `resume`, training continues from the newest complete checkpoint and reproduces the
    uninterrupted run exactly: the task stream is a function of the step, and the checkpoint
    holds everything else. SIGINT/SIGTERM stop after the current step with a checkpoint.
    `images`: the classes of each split (train, val, test) from Python, e.g.
    `metagrad.data.splits_from_tensors(...)`, instead of `task.dataset`. The run folder is
    locked against other processes until `fit` returns. With `train.val_tasks = 0` nothing is
    validated and every validation point saves the current parameters as `best`.
    """
    with contextlib.ExitStack() as hold:
        if config.is_rl:
            return fit_rl(
                config, Path(run_dir), hold, resume=resume, overwrite=overwrite, progress=progress
            )
        return _fit(config, Path(run_dir), hold, resume, overwrite, progress, images)


def _fit(
    config: Config,
    run_dir: Path,
    hold: contextlib.ExitStack,
    resume: bool,
    overwrite: bool,
    progress: bool,
    images: Mapping[str, ClassImages] | None,
) -> Path:
    settings = config.train
    device = local_device(resolve_device(settings.device))
    world = init_world(device)  # one process, or one of several under torchrun

    def check_folder() -> None:  # before any compute
        check_run_dir(run_dir, config, resume=resume, overwrite=overwrite)

    world.on_main(check_folder)
    world.check_meta_batch(settings.meta_batch_size)
    progress = progress and world.is_main
    say(f"loading the {config.task.dataset} tasks")
    tasks = build_tasks(config, device, images=images)
    val_source = build_tasks(config, device, evaluation=True, images=images)
    check_validation(config, val_source)
    val_batches = [
        batch.to(device)
        for batch in fixed_batches(val_source, "val", settings.val_tasks, config.eval.batch_size)
    ]
    say(f"building the {config.model.name} model and the {config.algorithm.name} algorithm")
    learner = build_learner(config, device, images)  # before the folder: a bad model makes none
    state = world.on_main(  # rank 0 holds the run folder and hands the checkpoint to all
        lambda: init_run_dir(run_dir, config, resume=resume, overwrite=overwrite, hold=hold)
    )
    resume = state is not None  # a run stopped before its first checkpoint starts afresh
    algorithm = learner.algorithm  # its schedules are set for each outer step (`at_step`)
    optimizer = outer_optimizer(config, learner.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step))
    store = CheckpointStore(run_dir / CHECKPOINT_DIR, keep=settings.keep_checkpoints)
    if world.is_main:
        store.remove_temporary()

    start, best, elapsed, skipped = 0, None, 0.0, 0
    top: list[dict] = []  # the keep_best best validations, best first
    window: dict[str, list[float]] = {}  # metrics of the steps since the last log line
    same_execution = False
    if resume:
        same_execution = _execution_settings(config.to_dict()) == _execution_settings(
            state["config"]
        )
        # on another number of processes each has another share of tasks: plan it anew
        same_execution = same_execution and state.get("processes", 1) == world.size
        learner.load_state_dict(state, plan=same_execution)  # a resumed run executes as before
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best, elapsed, skipped, window = (
            state[k] for k in ("step", "best", "elapsed", "skipped", "window")
        )
        top = state.get("top", [])
    world.broadcast(learner.parameters() + list(learner.model.buffers()))
    # the plan is measured on the algorithm as it runs at the end of the run: with a schedule
    # that starts first order (MAML++'s DA), the second-order steps decide speed and memory
    learner.algorithm = algorithm.at_step(settings.iterations - 1)
    if not same_execution:
        first = world.local(tasks.sample("train", start, settings.meta_batch_size)).to(device)
        if settings.max_memory is not None:
            say("choosing the execution within the memory budget")
            learner.plan = planned_execution(learner, first, config)
        else:
            learner.choose_plan(first)
    higher_is_better = learner.network.objective.higher_is_better
    logger = RunLogger(run_dir, resume_step=start if resume else None, silent=not world.is_main)
    snapshots = [s for s in sorted(settings.snapshot_seconds) if s > elapsed]

    def checkpoint(kind: str, step: int, prune: bool = True) -> None:
        state = {
            "step": step,
            **learner.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "best": best,
            "top": top,
            "elapsed": elapsed,
            "skipped": skipped,
            "window": window,
            "config": config.to_dict(),
            "fingerprint": config.fingerprint(),
            "processes": world.size,
        }
        if world.is_main:
            store.save(kind, step, state, prune=prune)
        world.barrier()  # no process reads a checkpoint (to evaluate) before it is whole

    checkpoint("step", start)  # a resume too: it may continue from a best or time checkpoint
    budget = f", time budget {settings.time_budget:g} s" if settings.time_budget else ""
    say(f"training from step {start} to {settings.iterations}{budget} in {run_dir}")
    bar = tqdm(range(start, settings.iterations), desc=config.name, disable=not progress)
    with GracefulStop() as stop:
        for step in bar:
            tick = time.perf_counter()
            batch = tasks.sample("train", step, settings.meta_batch_size).to(device)
            learner.algorithm = algorithm.at_step(step)
            grads, metrics = learner.meta_gradient(batch)
            problem = nonfinite(step, metrics["loss"], grads.named())
            skipped = skipped + 1 if problem else 0
            if problem and (settings.nonfinite == "error" or skipped > settings.max_skips):
                raise NonFiniteError(problem + " Lower algorithm.inner_lr or train.outer_lr.")
            if problem:
                warnings.warn(f"{problem} Step skipped ({skipped} in a row).", stacklevel=1)
            else:
                for param, grad in zip(learner.parameters(), grads.named().values(), strict=True):
                    param.grad = grad
                optimizer.step()
                for name, values in metrics.items():
                    window.setdefault(name, []).append(values.mean().item())
            scheduler.step()
            # every process takes the same decisions: by the slowest clock, on any one's signal
            (elapsed,) = world.agree(elapsed + time.perf_counter() - tick)

            done = step + 1
            final = done == settings.iterations or elapsed >= (settings.time_budget or math.inf)
            if window and (done % settings.log_every == 0 or final):
                means = {name: sum(v) / len(v) for name, v in window.items()}
                logger.log(done, "train", {**means, "outer_lr": scheduler.get_last_lr()[0]})
                bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()})
                if not progress:
                    shown = ", ".join(f"{k} {v:.4g}" for k, v in means.items())
                    say(f"step {done}/{settings.iterations} ({elapsed:.0f} s): {shown}")
                window.clear()
                world.check_same(learner.parameters(), done)
            while snapshots and elapsed >= snapshots[0]:
                checkpoint(f"time-{snapshots.pop(0):g}s", done)
            if done % settings.val_every == 0 or final:
                value = validate(config, learner, val_batches, logger, done)
                if best is None or improves(higher_is_better, value, best["value"]):
                    best = {"step": done, "value": value}
                    checkpoint("best", done)
                if settings.keep_best > 1:
                    top = ranked([*top, {"step": done, "value": value}], higher_is_better)
                    top = top[: settings.keep_best]
                    if any(entry["step"] == done for entry in top):
                        checkpoint("top", done, prune=False)
                    stale = set(store.steps("top")) - {entry["step"] for entry in top}
                    for old in stale if world.is_main else ():
                        store.remove("top", old)
            (requested,) = world.agree(stop.requested or 0)
            if done % settings.ckpt_every == 0 or final or requested:
                checkpoint("step", done)
            if requested:
                logger.close()
                stopped = Interrupted(int(requested), saved=True, step=done, run=str(run_dir))
                stopped.shared = True  # every process stops at this step
                raise stopped
            if final:
                break
    logger.close()
    return run_dir


def check_validation(config: Config, tasks: TaskSource) -> None:
    """Refuse validation tasks from a split without validation classes (Omniglot's lake split),
    before any training."""
    if (
        config.train.val_tasks
        and isinstance(tasks, EpisodeSampler)
        and not len(tasks.images["val"])
    ):
        where = (
            f"task.class_split = {config.task.class_split}"
            if config.task.dataset == "omniglot"
            else f"task.dataset = {config.task.dataset}"
        )
        raise ConfigError(
            f"train.val_tasks = {config.train.val_tasks} but {where} has no validation classes; "
            "set train.val_tasks = 0 to train without validation (the last checkpoint is then "
            "kept as the best), or choose a split with validation classes"
        )


def _execution_settings(config: dict) -> dict:
    """The fields that choose how a meta-step runs: a resume that changes them chooses anew."""
    train = config["train"]
    fields = ("strategy", "chunk_size", "checkpoint_inner", "max_memory", "device")
    return {k: train.get(k) for k in fields}


def planned_execution(learner: MetaLearner, batch: TaskBatch, config: Config):
    """The fastest execution plan within `train.max_memory`, measured on `batch`."""
    budget = parse_size(config.train.max_memory)
    planned, candidates, in_use = plan_memory(
        learner.algorithm, learner.network, learner.meta, batch, budget, learner.plan
    )
    print(f"memory budget {format_size(budget)}, {format_size(in_use)} in use; fitting:")
    for candidate in candidates:
        print(f"  {candidate.describe()}, {candidate.seconds:.3g} s per meta-step")
    print(f"execution plan: {planned.describe()}")
    return planned


def outer_optimizer(config: Config, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    lr = config.train.outer_lr
    if config.train.outer_optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr)
    return torch.optim.Adam(params, lr=lr)


def lr_factor(config: Config, step: int) -> float:
    """The outer learning rate at outer step `step`, as a fraction of `train.outer_lr`."""
    settings = config.train
    if settings.outer_lr_decay == "linear":
        return 1.0 - step / settings.iterations
    if settings.outer_lr_decay == "cosine":
        floor = settings.outer_lr_min / settings.outer_lr
        return floor + (1.0 - floor) * (1.0 + math.cos(math.pi * step / settings.iterations)) / 2
    return 1.0


def ranked(validations: list[dict], higher_is_better: bool) -> list[dict]:
    """Validations (`{"step", "value"}`) best first; of equal values, the earlier first."""
    sign = -1 if higher_is_better else 1
    return sorted(validations, key=lambda entry: (sign * entry["value"], entry["step"]))


def nonfinite(step: int, losses: torch.Tensor, grads: Params) -> str | None:
    """What is NaN/Inf in this step (tasks, parameters), or None when all is finite."""
    bad_tasks = (~torch.isfinite(losses)).nonzero().flatten().tolist()
    bad_params = [name for name, g in grads.items() if not torch.isfinite(g).all()]
    if not (bad_tasks or bad_params):
        return None
    return (
        f"non-finite values at outer step {step}: loss of tasks {bad_tasks or 'none'} of the "
        f"meta-batch, gradient of {bad_params or 'no parameter'}. The parameters were not "
        "updated and the last checkpoint is intact."
    )


def improves(higher_is_better: bool, value: float | None, best: float | None) -> bool:
    """Whether `value` beats `best`; without validation (None) the newest is the best."""
    if value is None or best is None:
        return True
    return value > best if higher_is_better else value < best


def validate(config, learner, batches, logger, step) -> float | None:
    """Primary metric on the fixed validation tasks, adapted as at test time; None without
    validation tasks (`train.val_tasks = 0`)."""
    if not batches:
        return None
    metrics = protocol_metrics(config, learner, batches)
    means = {name: values.mean(0) for name, values in metrics.items()}
    logged = {f"pre_{n}": m[0].item() for n, m in means.items()}
    logged |= {f"post_{n}": m[-1].item() for n, m in means.items()}
    logger.log(step, "val", logged)
    return logged[f"post_{learner.network.objective.primary}"]


def say(line: str) -> None:
    """A start-up or progress line, shown at once."""
    print(line, flush=True)
