"""`fit()`: the outer loop of meta-training, readable top to bottom."""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from metagrad.algorithms import build_algorithm, fastest_strategy
from metagrad.build import build_tasks, eval_optimizer, init_model, objective_for, resolve_device
from metagrad.checkpoint import CHECKPOINT_DIR, load_checkpoint, save_checkpoint
from metagrad.config import Config, dump_yaml
from metagrad.errors import CheckpointError, NonFiniteError
from metagrad.evaluate import adapted_metrics, fixed_batches
from metagrad.logging import RunLogger
from metagrad.models.functional import Params, functional_forward, meta_parameters

CONFIG_FILE = "config.yaml"


def fit(
    config: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Meta-train `config` in `run_dir` (config, metrics, TensorBoard, checkpoints); return it."""
    run_dir = prepare_run_dir(Path(run_dir), config, resume=resume, overwrite=overwrite)
    settings = config.train
    device = resolve_device(settings.device)
    objective = objective_for(config)
    model = init_model(config).to(device)
    params, buffers = meta_parameters(model)
    algorithm = build_algorithm(config, functional_forward(model), objective, settings.strategy)
    optimizer = outer_optimizer(config, params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step))

    start, best, elapsed = 0, None, 0.0
    if resume:
        state = load_checkpoint(run_dir / CHECKPOINT_DIR / "last.pt", device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best, elapsed = state["step"], state["best"], state["elapsed"]
        algorithm = dataclasses.replace(algorithm, strategy=state["strategy"])
    logger = RunLogger(run_dir, resume_step=start if resume else None)

    tasks = build_tasks(config, config.task.n_query, device)
    val_tasks = build_tasks(config, config.eval.n_query, device)
    val_batches = [
        b.to(device)
        for b in fixed_batches(val_tasks, "val", settings.val_tasks, config.eval.batch_size)
    ]
    snapshots = [s for s in sorted(settings.snapshot_seconds) if s > elapsed]
    if algorithm.strategy == "auto":
        probe = tasks.sample("train", start, settings.meta_batch_size).to(device)
        chosen, timings = fastest_strategy(
            lambda s: dataclasses.replace(algorithm, strategy=s).meta_step(params, buffers, probe)
        )
        algorithm = dataclasses.replace(algorithm, strategy=chosen)
        seconds = ", ".join(f"{name} {t:.3g} s" for name, t in timings.items())
        print(f"execution strategy: {chosen} (measured per meta-step: {seconds})")

    def checkpoint(name: str, step: int) -> None:
        state = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "best": best,
            "elapsed": elapsed,
            "strategy": algorithm.strategy,
            "config": config.to_dict(),
            "fingerprint": config.fingerprint(),
        }
        save_checkpoint(run_dir / CHECKPOINT_DIR / f"{name}.pt", state)

    window: dict[str, list[float]] = {}
    bar = tqdm(range(start, settings.iterations), desc=config.name, disable=not progress)
    for step in bar:
        tick = time.perf_counter()
        batch = tasks.sample("train", step, settings.meta_batch_size).to(device)
        grads, metrics = algorithm.meta_step(params, buffers, batch)
        check_finite(step, metrics["loss"], grads)
        for name, param in params.items():
            param.grad = grads[name]
        optimizer.step()
        scheduler.step()
        for name, values in metrics.items():
            window.setdefault(name, []).append(values.mean().item())
        elapsed += time.perf_counter() - tick

        done = step + 1
        final = done == settings.iterations or elapsed >= (settings.time_budget or math.inf)
        if done % settings.log_every == 0 or final:
            means = {name: sum(v) / len(v) for name, v in window.items()}
            logger.log(done, "train", {**means, "outer_lr": scheduler.get_last_lr()[0]})
            bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()})
            window.clear()
        while snapshots and elapsed >= snapshots[0]:
            checkpoint(f"time-{snapshots.pop(0):g}s", done)
        if done % settings.val_every == 0 or final:
            value = validate(config, params, buffers, algorithm, val_batches, logger, done)
            if best is None or improves(objective.higher_is_better, value, best["value"]):
                best = {"step": done, "value": value}
                checkpoint("best", done)
        if done % settings.ckpt_every == 0 or final:
            checkpoint("last", done)
        if final:
            break
    logger.close()
    return run_dir


def prepare_run_dir(run_dir: Path, config: Config, *, resume: bool, overwrite: bool) -> Path:
    """Create the run folder, or check that it holds this same run before resuming."""
    config_file = run_dir / CONFIG_FILE
    if resume:
        if not (run_dir / CHECKPOINT_DIR / "last.pt").is_file():
            raise CheckpointError(
                f"--resume: {run_dir} holds no checkpoint ({CHECKPOINT_DIR}/last.pt); "
                "start the run without --resume"
            )
        saved = config_file.read_text() if config_file.is_file() else None
        if saved != dump_yaml(config):
            raise CheckpointError(
                f"--resume: the config differs from the one saved in {config_file}; resume with "
                "the same preset and --set overrides, or start a new run folder"
            )
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise CheckpointError(
            f"run folder {run_dir} already holds a run; pass --resume to continue it, "
            "--overwrite to replace it, or --run-dir to choose another folder"
        )
    if overwrite and run_dir.exists() and any(run_dir.iterdir()):
        if not config_file.is_file():
            raise CheckpointError(
                f"--overwrite: {run_dir} is not a run folder (no {CONFIG_FILE}); "
                "refusing to delete it. Choose another --run-dir"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file.write_text(dump_yaml(config))
    return run_dir


def outer_optimizer(config: Config, params: Params) -> torch.optim.Optimizer:
    lr = config.train.outer_lr
    if config.train.outer_optimizer == "sgd":
        return torch.optim.SGD(params.values(), lr=lr)
    return torch.optim.Adam(params.values(), lr=lr)


def lr_factor(config: Config, step: int) -> float:
    if config.train.outer_lr_decay == "linear":
        return 1.0 - step / config.train.iterations
    return 1.0


def check_finite(step: int, losses: torch.Tensor, grads: Params) -> None:
    """Stop before a NaN/Inf reaches the meta-parameters, naming what went wrong where."""
    bad_tasks = (~torch.isfinite(losses)).nonzero().flatten().tolist()
    bad_params = [name for name, g in grads.items() if not torch.isfinite(g).all()]
    if bad_tasks or bad_params:
        raise NonFiniteError(
            f"non-finite values at outer step {step}: loss of tasks {bad_tasks or 'none'}, "
            f"gradient of {bad_params or 'no parameter'}. The parameters were not updated; the "
            "last checkpoint is intact. Lower algorithm.inner_lr or train.outer_lr and resume"
        )


def improves(higher_is_better: bool, value: float, best: float) -> bool:
    return value > best if higher_is_better else value < best


def validate(config, params, buffers, algorithm, batches, logger, step) -> float:
    """Primary metric on the fixed validation tasks, adapted as at test time."""
    metrics = adapted_metrics(
        algorithm.forward,
        params,
        buffers,
        batches,
        objective=algorithm.objective,
        steps=config.eval.inner_steps,
        optimizer=eval_optimizer(config),
        strategy="auto",
    )
    means = {name: values.mean(0) for name, values in metrics.items()}
    logged = {f"pre_{n}": m[0].item() for n, m in means.items()}
    logged |= {f"post_{n}": m[-1].item() for n, m in means.items()}
    logger.log(step, "val", logged)
    return logged[f"post_{algorithm.objective.primary}"]
