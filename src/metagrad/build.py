"""Turning a `Config` into the objects a run is made of; shared by training, evaluation, plots."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from metagrad.algorithms.inner import INNER_OPTIMIZERS, InnerOptimizer
from metagrad.config import Config
from metagrad.data.class_images import ClassImages
from metagrad.data.natural import prepare
from metagrad.data.omniglot import load_omniglot, split_classes
from metagrad.errors import ConfigError
from metagrad.models import MLP, Conv4
from metagrad.objectives import CLASSIFICATION, REGRESSION, Objective
from metagrad.tasks.sampler import EpisodeSampler
from metagrad.tasks.seeding import SPLITS
from metagrad.tasks.sinusoid import SinusoidTasks

TaskSource = SinusoidTasks | EpisodeSampler


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


def build_model(config: Config) -> nn.Module:
    """The network named by `config.model`, shaped for `config.task`."""
    if config.model.name == "conv4":
        return Conv4(
            in_channels=image_channels(config),
            num_classes=config.task.n_way,
            image_size=config.task.image_size,
            hidden=config.model.hidden[0],
            pool=config.model.pool,
        )
    return MLP(1, config.model.hidden, 1)


def image_channels(config: Config) -> int:
    """Channels of the task's images: greyscale Omniglot, RGB natural images."""
    return 1 if config.task.dataset == "omniglot" else 3


def init_model(config: Config) -> nn.Module:
    """The network at its seeded initialisation; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        return build_model(config)


def build_tasks(
    config: Config, device: torch.device | str = "cpu", *, evaluation: bool = False
) -> TaskSource:
    """The task source of `config.task`, shaped for meta-training or, with `evaluation`, for
    validation and test (`eval.k_shot` and `eval.n_query`)."""
    task = config.task
    k_shot = (config.eval.k_shot or task.k_shot) if evaluation else task.k_shot
    n_query = config.eval.n_query if evaluation else task.n_query
    if task.dataset == "sinusoid":
        return SinusoidTasks(k_shot=k_shot, n_query=n_query, seed=config.train.seed)
    images = {
        split: split_images(
            task.dataset,
            task.data_root,
            task.image_size,
            task.class_split,
            split,
            split in task.rotations,
        ).to(device)
        for split in SPLITS
    }
    if evaluation:
        _check_eval_examples(config, images, k_shot + n_query)
    return EpisodeSampler(images, task.n_way, k_shot, n_query, seed=config.train.seed)


def _check_eval_examples(config: Config, images: dict[str, ClassImages], needed: int) -> None:
    """Name the `eval` fields when test tasks ask for more examples than a class has."""
    available = min(images[split].num_examples for split in ("val", "test"))
    if needed > available:
        shots = "eval.k_shot" if config.eval.k_shot else "task.k_shot"
        raise ConfigError(
            f"eval.n_query = {config.eval.n_query} with {shots} = {needed - config.eval.n_query}"
            f" needs {needed} examples per class, but the classes of the val and test splits have "
            f"{available}; lower eval.n_query to at most {available - needed + config.eval.n_query}"
        )


@lru_cache(maxsize=8)
def split_images(
    dataset: str,
    root: str | None,
    image_size: int,
    class_split: str,
    split: str,
    rotations: bool,
) -> ClassImages:
    """One split's classes; cached because training and evaluation ask for the same ones.

    `class_split` and `rotations` apply to Omniglot; the other datasets have fixed splits."""
    if dataset != "omniglot":
        return _natural_splits(dataset, root, image_size)[split]
    part = split_classes(load_omniglot(root, image_size=image_size), class_split, split)
    return part.with_rotations() if rotations else part


@lru_cache(maxsize=2)
def _natural_splits(dataset: str, root: str | None, image_size: int) -> dict[str, ClassImages]:
    """All splits of a natural-image dataset, read once for the three `split_images` calls."""
    return prepare(dataset, root, image_size=image_size).splits


def objective_for(config: Config) -> Objective:
    return REGRESSION if config.task.dataset == "sinusoid" else CLASSIFICATION


def eval_optimizer(config: Config) -> InnerOptimizer:
    """The inner optimizer at test time: the training one, with `eval.inner_lr` if set."""
    lr = config.eval.inner_lr or config.algorithm.inner_lr
    return INNER_OPTIMIZERS[config.algorithm.inner_optimizer](lr)
