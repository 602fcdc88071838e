"""Turning a `Config` into the objects a run is made of; shared by training, evaluation, plots."""

from __future__ import annotations

import torch
from torch import nn

from metagrad.algorithms.inner import INNER_OPTIMIZERS, InnerOptimizer
from metagrad.config import Config
from metagrad.errors import ConfigError
from metagrad.models import build_model
from metagrad.objectives import REGRESSION, Objective
from metagrad.tasks.sinusoid import SinusoidTasks


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(
            f"train.device = {name!r} is not a device; use auto, cpu or cuda"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device = {name!r} but no CUDA device is available; use cpu")
    return device


def init_model(config: Config) -> nn.Module:
    """The network at its seeded initialisation; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        return build_model(config)


def build_tasks(config: Config, n_query: int) -> SinusoidTasks:
    """The task source of `config.task` with `n_query` query examples per task."""
    return SinusoidTasks(k_shot=config.task.k_shot, n_query=n_query, seed=config.train.seed)


def objective_for(config: Config) -> Objective:
    return REGRESSION


def eval_optimizer(config: Config) -> InnerOptimizer:
    """The inner optimizer at test time: the training one, with `eval.inner_lr` if set."""
    lr = config.eval.inner_lr or config.algorithm.inner_lr
    return INNER_OPTIMIZERS[config.algorithm.inner_optimizer](lr)
