"""N-way K-shot episodes drawn from a class-indexed image tensor, on its device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from metagrad.data.class_images import ClassImages
from metagrad.errors import ConfigError
from metagrad.tasks.batch import TaskBatch
from metagrad.tasks.seeding import task_generator


@dataclass(frozen=True)
class EpisodeSampler:
    """`sample(split, index, T)`: T tasks of N classes × (K support + Q query) examples.

    Classes and examples are chosen with a generator seeded from (seed, split, index), then
    gathered with one indexing operation on the in-memory tensor (no per-image Python, no
    decoding). Labels are 0..N−1 in a random order per task (with `train_labels = "class"`, a
    training task's labels are its classes' indices in the training split instead); support and
    query never share an example. Images become float in [0, 1] on the images' device.
    """

    images: dict[str, ClassImages]
    """The classes of each split (train / val / test), disjoint."""
    n_way: int
    k_shot: int
    n_query: int
    seed: int = 0
    train_labels: Literal["task", "class"] = "task"

    def __post_init__(self) -> None:
        needed = self.k_shot + self.n_query
        for split, classes in self.images.items():
            if self.n_way > len(classes):
                raise ConfigError(
                    f"task.n_way = {self.n_way} but the {split} split has only {len(classes)} "
                    f"classes; lower task.n_way to at most {len(classes)}"
                )
            if needed > classes.num_examples:
                raise ConfigError(
                    f"task.k_shot + n_query = {self.k_shot} + {self.n_query} = {needed} but every "
                    f"class of the {split} split has {classes.num_examples} examples; lower them "
                    f"so that k_shot + n_query <= {classes.num_examples}"
                )

    def sample(self, split: str, index: int, num_tasks: int) -> TaskBatch:
        classes = self.images[split]
        generator = task_generator(self.seed, split, index)
        n, k, per_class = self.n_way, self.k_shot, self.k_shot + self.n_query
        chosen = torch.rand(num_tasks, len(classes), generator=generator).argsort(1)[:, :n]
        examples = torch.rand(num_tasks, n, classes.num_examples, generator=generator)
        examples = examples.argsort(2)[:, :, :per_class]
        device = classes.images.device
        pixels = classes.images[chosen[:, :, None].to(device), examples.to(device)]
        x = pixels.float().div_(255)  # [T, N, K+Q, C, H, W]
        if split == "train" and self.train_labels == "class":
            labels = chosen.to(device)[:, :, None].expand(num_tasks, n, per_class)
        else:
            labels = torch.arange(n, device=device).expand(num_tasks, per_class, n).transpose(1, 2)
        return TaskBatch(
            *self._flatten(x[:, :, :k], labels[:, :, :k], generator),
            *self._flatten(x[:, :, k:], labels[:, :, k:], generator),
        )

    @staticmethod
    def _flatten(x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator):
        """`[T, N, S, ...]` → `[T, N·S, ...]` in a random order within each task."""
        num_tasks, n, s = labels.shape
        order = torch.rand(num_tasks, n * s, generator=generator).argsort(1).to(x.device)
        x = x.flatten(1, 2)
        x = x[torch.arange(num_tasks, device=x.device)[:, None], order]
        return x, labels.flatten(1).gather(1, order)
