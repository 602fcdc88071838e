"""Turning a `Config` into the objects a run is made of; shared by training, evaluation, plots."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import lru_cache

import torch
from torch import nn

from metagrad.algorithms import algorithm_class, build_algorithm
from metagrad.config import Config, TaskConfig
from metagrad.data.class_images import ClassImages
from metagrad.data.folder import load_image_folder
from metagrad.data.natural import prepare
from metagrad.data.omniglot import load_omniglot, split_classes
from metagrad.errors import ConfigError
from metagrad.execution import ExecutionPlan, MetaLearner
from metagrad.models import MLP, Conv4
from metagrad.models.resnet12 import ResNet12
from metagrad.models.user import user_model
from metagrad.objectives import CLASSIFICATION, REGRESSION, Objective
from metagrad.tasks.sampler import EpisodeSampler
from metagrad.tasks.seeding import SPLITS
from metagrad.tasks.sinusoid import SinusoidTasks
from metagrad.user_code import is_user_code

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


def build_model(config: Config, channels: int | None = None) -> nn.Module:
    """The network named by `config.model`, shaped for `config.task` (and for images of
    `channels` channels where given): a built-in one, or a user's factory
    (`model.name: package.module:function`). For an algorithm without a classification head
    (`Algorithm.headless`) it is built with `num_classes = 0`: an embedding."""
    channels = channels or image_channels(config)
    num_classes = 0 if algorithm_class(config).headless else config.task.n_way
    if is_user_code(config.model.name):
        return user_model(
            config.model.name,
            config.model.kwargs,
            num_classes=num_classes if config.task.dataset != "sinusoid" else 1,
            in_channels=channels,
            image_size=config.task.image_size,
        )
    if config.model.name == "resnet12":
        return ResNet12(
            channels,
            num_classes,
            config.task.image_size,
            channels=config.model.hidden,
        )
    if config.model.name == "conv4":
        return Conv4(
            in_channels=channels,
            num_classes=num_classes,
            image_size=config.task.image_size,
            hidden=config.model.hidden[0],
            pool=config.model.pool,
        )
    return MLP(1, config.model.hidden, 1)


def image_channels(config: Config) -> int:
    """Channels of the task's images: greyscale Omniglot, RGB natural images, an image folder's
    own (`task.channels`, or as found)."""
    task = config.task
    if task.dataset == "folder":
        return task.channels or split_images(task, "train").images.shape[2]
    return 1 if task.dataset == "omniglot" else 3


def init_model(config: Config, channels: int | None = None) -> nn.Module:
    """The network at its seeded initialisation; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        return build_model(config, channels)


def build_tasks(
    config: Config,
    device: torch.device | str = "cpu",
    *,
    evaluation: bool = False,
    images: Mapping[str, ClassImages] | None = None,
) -> TaskSource:
    """The task source of `config.task`, shaped for meta-training or, with `evaluation`, for
    validation and test (`eval.k_shot`, `eval.n_query` and `task.episodes`). `images`: the
    classes of each split given from Python, instead of `task.dataset`."""
    task = config.task
    k_shot = (config.eval.k_shot or task.k_shot) if evaluation else task.k_shot
    n_query = config.eval.n_query if evaluation else task.n_query
    if images is not None and task.dataset != "folder":
        raise ConfigError(
            f"task.dataset = {task.dataset} but images were given from Python: set "
            "task.dataset = folder (your own images; task.data_root is then not read)"
        )
    if task.dataset == "sinusoid":
        return SinusoidTasks(k_shot=k_shot, n_query=n_query, seed=config.train.seed)
    splits = {
        split: (images[split] if images is not None else split_images(task, split)).to(device)
        for split in SPLITS
    }
    if evaluation:
        _check_eval_examples(config, splits, k_shot + n_query)
    n_way = (config.eval.n_way or task.n_way) if evaluation else task.n_way
    labels = algorithm_class(config).train_labels
    episodes = task.episodes if evaluation else "any"  # training tasks: all training classes
    return EpisodeSampler(splits, n_way, k_shot, n_query, config.train.seed, labels, episodes)


def _check_eval_examples(config: Config, images: Mapping[str, ClassImages], needed: int) -> None:
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
def split_images(task: TaskConfig, split: str) -> ClassImages:
    """One split's classes; cached because training and evaluation ask for the same ones.

    `task.class_split` applies to Omniglot and `task.folder_split` to an image folder; the
    other datasets have fixed splits. `task.rotations` adds rotated copies as extra classes."""
    if task.dataset == "omniglot":
        loaded = load_omniglot(task.data_root, image_size=task.image_size)
        part = split_classes(loaded, task.class_split, split)
    elif task.dataset == "folder":
        part = _folder_splits(task)[split]
    else:
        return _natural_splits(task.dataset, task.data_root, task.image_size)[split]
    return part.with_rotations() if split in task.rotations else part


@lru_cache(maxsize=2)
def _natural_splits(dataset: str, root: str | None, image_size: int) -> dict[str, ClassImages]:
    """All splits of a natural-image dataset, read once for the three `split_images` calls."""
    return prepare(dataset, root, image_size=image_size).splits


@lru_cache(maxsize=2)
def _folder_splits(task: TaskConfig) -> dict[str, ClassImages]:
    """All splits of an image folder (`task.dataset: folder`), read once."""
    if task.data_root is None:
        raise ConfigError(
            "task.dataset = folder needs task.data_root: the folder holding one subfolder of "
            "images per class (or train/ val/ test/ subfolders of them)"
        )
    return load_image_folder(
        task.data_root,
        image_size=task.image_size,
        channels=task.channels,
        split=task.folder_split,
        fractions=task.split_fractions,
    )


def objective_for(config: Config) -> Objective:
    return REGRESSION if config.task.dataset == "sinusoid" else CLASSIFICATION


def build_learner(
    config: Config,
    device: torch.device | str = "cpu",
    images: Mapping[str, ClassImages] | None = None,
) -> MetaLearner:
    """The run's algorithm and seeded network on `device`, with the plan `config.train` asks
    for (still `auto` until a batch is measured); `images`: classes given from Python."""
    settings = config.train
    plan = ExecutionPlan(
        settings.strategy, settings.chunk_size, settings.checkpoint_inner, settings.precision
    )
    channels = images["train"].images.shape[2] if images is not None else None
    model = init_model(config, channels).to(device)
    algorithm = build_algorithm(config, **_data_shape(config, model, channels, images))
    if config.eval.n_way not in (None, config.task.n_way) and not algorithm.headless:
        raise ConfigError(
            f"eval.n_way = {config.eval.n_way} but the network's head has task.n_way = "
            f"{config.task.n_way} outputs ({config.algorithm.name} adapts it); remove eval.n_way, "
            "or use an algorithm without a head (protonets, baseline, baselinepp)"
        )
    learner = MetaLearner(algorithm, model, objective_for(config), plan)
    if config.eval.batch_norm == "running":
        learner.network.with_running_statistics()  # refused now, not at the first validation
    return learner


def _data_shape(
    config: Config,
    model: nn.Module,
    channels: int | None,
    images: Mapping[str, ClassImages] | None,
) -> dict[str, int]:
    """What an algorithm may need to know of the data and the network: the number of
    training classes (`classes`) and of the network's outputs (`features`)."""
    if config.task.dataset == "sinusoid" or not algorithm_class(config).headless:
        return {}
    train = images["train"] if images is not None else split_images(config.task, "train")
    size = config.task.image_size
    probe = torch.zeros(2, channels or image_channels(config), size, size)
    with torch.no_grad():  # on a copy: a user's batch norm may update running statistics
        outputs = copy.deepcopy(model).cpu()(probe)
    return {"classes": len(train), "features": outputs.shape[-1]}
