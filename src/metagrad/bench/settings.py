"""The workloads of `metagrad bench`: a preset, reshaped to the benchmark's task sizes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from metagrad.build import image_channels
from metagrad.config import Config, load_config
from metagrad.tasks.batch import TaskBatch


@dataclass(frozen=True)
class Setting:
    preset: str
    overrides: tuple[str, ...]
    about: str


SETTINGS: dict[str, Setting] = {
    "sinusoid": Setting("maml-sinusoid-5shot", (), "MLP 40-40, meta-batch 25, K=5, 1 step"),
    "omniglot-5w1s": Setting(
        "maml-omniglot-5w1s",
        ("task.n_query=15",),
        "Conv-4 (64, stride 2), meta-batch 32, 5-way 1-shot, 15 query/class, 1 step",
    ),
    "omniglot-5w1s-fo": Setting(
        "fomaml-omniglot-5w1s",
        ("task.n_query=15",),
        "as omniglot-5w1s, first order",
    ),
    "omniglot-20w1s": Setting(
        "maml-omniglot-20w1s",
        ("task.n_query=5",),
        "Conv-4 (64, stride 2), meta-batch 16, 20-way 1-shot, 5 query/class, 5 steps",
    ),
    "omniglot-20w1s-fo": Setting(
        "fomaml-omniglot-20w1s",
        ("task.n_query=5",),
        "as omniglot-20w1s, first order",
    ),
    "resnet12-5w1s": Setting(
        "maml-cifarfs-5w1s",
        (
            "model.name=resnet12",
            "model.hidden=[64,160,320,640]",
            "train.meta_batch_size=2",
            "algorithm.inner_steps=1",
        ),
        "ResNet-12 (64-160-320-640), 32×32×3, meta-batch 2, 5-way 1-shot, 15 query/class, 1 step",
    ),
    "miniimagenet-5w1s": Setting(
        "maml-miniimagenet-5w1s",
        (),
        "Conv-4 (32, max-pool), 84×84×3, meta-batch 4, 5-way 1-shot, 15 query/class, 5 steps",
    ),
}


def setting_config(name: str, overrides: Sequence[str] = ()) -> Config:
    """The config of benchmark setting `name`, with extra `overrides` (e.g. a sweep value)."""
    setting = SETTINGS[name]
    return load_config(setting.preset, [*setting.overrides, *overrides])


def synthetic_batch(config: Config, device: torch.device | str = "cpu") -> TaskBatch:
    """A meta-batch of the config's shapes filled with seeded noise.

    Timing and memory depend only on shapes, so the benchmark needs no dataset; every process
    builds the same batch from the same seed, so their meta-gradients can be compared.
    """
    task = config.task
    tasks = config.train.meta_batch_size
    generator = torch.Generator().manual_seed(config.train.seed)
    if task.dataset == "sinusoid":
        shape_s, shape_q = (tasks, task.k_shot, 1), (tasks, task.n_query, 1)
        x_s = torch.rand(shape_s, generator=generator) * 10 - 5
        x_q = torch.rand(shape_q, generator=generator) * 10 - 5
        y_s, y_q = torch.sin(x_s), torch.sin(x_q)
    else:
        image = (image_channels(config), task.image_size, task.image_size)
        x_s = torch.rand((tasks, task.n_way * task.k_shot, *image), generator=generator)
        x_q = torch.rand((tasks, task.n_way * task.n_query, *image), generator=generator)
        y_s = torch.arange(task.n_way).repeat_interleave(task.k_shot).expand(tasks, -1)
        y_q = torch.arange(task.n_way).repeat_interleave(task.n_query).expand(tasks, -1)
    return TaskBatch(x_s, y_s.contiguous(), x_q, y_q.contiguous()).to(device)
