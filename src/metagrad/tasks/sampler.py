"""N-way K-shot episodes drawn from a class-indexed image tensor, on its device."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from metagrad.data.class_images import ClassImages
from metagrad.errors import ConfigError
from metagrad.tasks.batch import TaskBatch
from metagrad.tasks.seeding import task_generator


@dataclass(frozen=True)
class EpisodeIndices:
    """What T tasks of a split are made of, as indices: which images, in which order, with which
    labels (`EpisodeSampler.indices`); `EpisodeSampler.gather` turns them into a `TaskBatch`."""

    classes: torch.Tensor
    """`[T, N]`: the classes of each task, as indices into the split's classes."""
    support: torch.Tensor
    """`[T, N, K]`: the support examples of each class, as indices into its examples."""
    query: torch.Tensor
    """`[T, N, Q]`: the query examples of each class, never one of its support examples."""
    support_order: torch.Tensor
    """`[T, N·K]`: position j of a task's support set holds entry `support_order[j]` of its
    `support` flattened to `[N·K]` (class `support_order[j] // K`)."""
    query_order: torch.Tensor
    """`[T, N·Q]`: the same for the query set."""
    y_support: torch.Tensor
    """`[T, N·K]`: the label of each support position."""
    y_query: torch.Tensor
    """`[T, N·Q]`: the label of each query position."""


@dataclass(frozen=True)
class EpisodeSampler:
    """`sample(split, index, T)`: T tasks of N classes × (K support + Q query) examples.

    Classes and examples are chosen with a generator seeded from (seed, split, index), then
    gathered with one indexing operation on the in-memory tensor (no per-image Python, no
    decoding). Labels are 0..N−1 in a random order per task (with `train_labels = "class"`, a
    training task's labels are its classes' indices in the training split instead); support and
    query never share an example. Images become float in [0, 1] on the images' device.

    `episodes = "within_alphabet"` draws Lake et al.'s one-shot tasks instead: every class of a
    task comes from one alphabet (class names `"Alphabet/..."`; the alphabet drawn per task among
    those with at least N classes), and its examples are the drawings of K support and Q query
    drawers (example m is drawer m + 1), disjoint and the same for every class of the task. A
    split without classes (the `lake` split's val) is allowed until a task is drawn from it.
    """

    images: dict[str, ClassImages]
    """The classes of each split (train / val / test), disjoint."""
    n_way: int
    k_shot: int
    n_query: int
    seed: int = 0
    train_labels: Literal["task", "class"] = "task"
    episodes: Literal["any", "within_alphabet"] = "any"
    """How a task's classes and examples are drawn: from all classes and examples of the split,
    or from one alphabet by distinct drawers (see the class docstring)."""
    _alphabets: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    """within_alphabet: each split's usable alphabets (`_usable_alphabets`)."""

    def __post_init__(self) -> None:
        needed = self.k_shot + self.n_query
        for split, classes in self.images.items():
            if not len(classes):
                continue
            if self.episodes == "within_alphabet":
                self._alphabets[split] = _usable_alphabets(classes.class_names, self.n_way, split)
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
        return self.gather(split, self.indices(split, index, num_tasks))

    def indices(self, split: str, index: int, num_tasks: int) -> EpisodeIndices:
        """The examples of meta-batch `index` of `split`, their order and labels, drawn on the
        CPU: a pure function of (seed, split, index, num_tasks)."""
        classes = self.images[split]
        if not len(classes):
            raise ConfigError(
                f"the {split} split has no classes to draw tasks from (Omniglot's lake split "
                "has no validation classes); evaluate on the test split, and train with "
                "train.val_tasks = 0"
            )
        generator = task_generator(self.seed, split, index)
        n, k, per_class = self.n_way, self.k_shot, self.k_shot + self.n_query
        if self.episodes == "within_alphabet":
            chosen, examples = self._within_alphabet(split, num_tasks, generator)
        else:
            chosen = torch.rand(num_tasks, len(classes), generator=generator).argsort(1)[:, :n]
            examples = torch.rand(num_tasks, n, classes.num_examples, generator=generator)
            examples = examples.argsort(2)[:, :, :per_class]
        if split == "train" and self.train_labels == "class":
            labels = chosen[:, :, None].expand(num_tasks, n, per_class)
        else:
            labels = torch.arange(n).expand(num_tasks, per_class, n).transpose(1, 2)
        support_order = self._order(num_tasks, n * k, generator)
        query_order = self._order(num_tasks, n * (per_class - k), generator)
        return EpisodeIndices(
            chosen,
            examples[:, :, :k],
            examples[:, :, k:],
            support_order,
            query_order,
            labels[:, :, :k].flatten(1).gather(1, support_order),
            labels[:, :, k:].flatten(1).gather(1, query_order),
        )

    def gather(self, split: str, indices: EpisodeIndices) -> TaskBatch:
        """The tasks `indices` describes, with images of `split` as float in [0, 1] on their
        device."""
        images = self.images[split].images
        return TaskBatch(
            self._pixels(images, indices.classes, indices.support, indices.support_order),
            indices.y_support.to(images.device),
            self._pixels(images, indices.classes, indices.query, indices.query_order),
            indices.y_query.to(images.device),
        )

    def _within_alphabet(
        self, split: str, num_tasks: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Classes `[T, N]` of one alphabet per task, and examples `[T, N, K+Q]`: the same K
        support and Q query drawers for every class of a task."""
        members, sizes = self._alphabets[split]
        n, per_class = self.n_way, self.k_shot + self.n_query
        picked = torch.randint(len(sizes), (num_tasks,), generator=generator)
        scores = torch.rand(num_tasks, members.shape[1], generator=generator)
        scores[torch.arange(members.shape[1]) >= sizes[picked, None]] = 2.0  # padding: never drawn
        chosen = members[picked[:, None], scores.argsort(1)[:, :n]]
        drawers = torch.rand(num_tasks, self.images[split].num_examples, generator=generator)
        examples = drawers.argsort(1)[:, None, :per_class].expand(num_tasks, n, per_class)
        return chosen, examples

    @staticmethod
    def _order(num_tasks: int, size: int, generator: torch.Generator) -> torch.Tensor:
        """A random order of `size` examples within each task, `[T, size]`."""
        return torch.rand(num_tasks, size, generator=generator).argsort(1)

    @staticmethod
    def _pixels(
        images: torch.Tensor, classes: torch.Tensor, examples: torch.Tensor, order: torch.Tensor
    ) -> torch.Tensor:
        """`[T, N·S, C, H, W]`: position j of task t shows entry `order[t, j]` of the task's
        `[N, S]` examples of its classes `[N]`."""
        num_tasks, n, s = examples.shape
        at_class = classes[:, :, None].expand(num_tasks, n, s).flatten(1).gather(1, order)
        at_example = examples.flatten(1).gather(1, order)
        device = images.device
        return images[at_class.to(device), at_example.to(device)].float().div_(255)


def _usable_alphabets(
    class_names: Sequence[str], n_way: int, split: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The alphabets of `split` with at least `n_way` classes, as a `[A, L]` table of class
    indices (each row padded with its first class) and their sizes `[A]`, in the order the
    alphabets first appear; rotated copies of a character count as classes of its alphabet."""
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(class_names):
        groups.setdefault(name.split("/")[0], []).append(index)  # "Alphabet/character01"
    usable = [members for members in groups.values() if len(members) >= n_way]
    if not usable:
        largest, members = max(groups.items(), key=lambda item: len(item[1]))
        raise ConfigError(
            f"task.episodes = within_alphabet draws the {n_way} classes of a task from one "
            f"alphabet, but the largest alphabet of the {split} split, {largest}, has "
            f"{len(members)} classes; lower the ways (task.n_way, or eval.n_way) to at most "
            f"{len(members)}, or set task.episodes = any"
        )
    width = max(len(members) for members in usable)
    table = torch.tensor([members + members[:1] * (width - len(members)) for members in usable])
    return table, torch.tensor([len(members) for members in usable])
