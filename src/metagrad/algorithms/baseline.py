"""Baseline and Baseline++ (Chen, Liu, Kira, Wang and Huang, "A closer look at few-shot
classification", ICLR 2019): pre-training on every training class, a new classifier per task."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from metagrad.algorithms.base import Algorithm, Learner, MetaParameters, Metrics
from metagrad.algorithms.inner import Adaptation, Observe, adapt
from metagrad.errors import ConfigError
from metagrad.models.functional import Params
from metagrad.tasks.batch import Task

TASK_HEAD = "task_head."
"""The prefix of the classifier fitted to a test task's support set."""


@dataclass(frozen=True)
class Baseline(Algorithm):
    """Meta-training is plain classification over all `classes` training classes (each task's
    examples labelled by their class in the training split) with a linear classifier on the
    network's `features`-dimensional embedding; the classifier is the algorithm's own
    meta-parameter (`classifier.*`). At test time the embedding is frozen and a new classifier,
    zero-initialised, is fitted to the support set: `steps` full-batch steps of the inner
    optimizer at the test learning rate.

    From the command line `classes` and `features` are filled from the data and the network;
    from Python, give them (`Baseline(classes=64, features=1600)`).
    """

    classes: int = 0
    """Training classes: the classifier's outputs in meta-training."""
    features: int = 0
    """The network's output size: its embedding."""
    inner_steps: int = 0
    train_labels = "class"
    headless = True
    cosine = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.classes < 1 or self.features < 1:
            raise ConfigError(
                f"{type(self).__name__} needs classes >= 1 (training classes) and features >= 1 "
                f"(the network's output size), got classes = {self.classes}, features = "
                f"{self.features}; give both, e.g. {type(self).__name__}(classes=64, features=1600)"
            )

    def extra_parameters(self, network: Params) -> Params:
        """`classifier.weight` (and `.bias`), drawn as `nn.Linear` draws them, from a fixed
        seed: the same for every run, whatever the global random state."""
        like = next(iter(network.values()))
        generator = torch.Generator().manual_seed(0)
        bound = 1 / math.sqrt(self.features)
        weight = torch.rand(self.classes, self.features, generator=generator) * 2 - 1
        weights = {"classifier.weight": bound * weight}
        if not self.cosine:
            bias = torch.rand(self.classes, generator=generator) * 2 - 1
            weights["classifier.bias"] = bound * bias
        return {k: v.to(like) for k, v in weights.items()}

    def classify(self, head: Params, features: torch.Tensor, prefix: str) -> torch.Tensor:
        """Logits of the linear classifier `head` (`<prefix>weight`, `<prefix>bias`)."""
        weight, bias = head[prefix + "weight"], head[prefix + "bias"]
        return features @ weight.transpose(-1, -2) + bias[..., None, :]

    def inner(self, learner, meta, x_support, y_support) -> tuple[Params, Metrics]:
        return meta.network, {}

    def outer(self, learner: Learner, meta: MetaParameters, fast: Params, task: Task) -> Metrics:
        x = learner.cat(task.x_support, task.x_query)
        y = learner.cat(task.y_support, task.y_query)
        outputs = self.classify(meta.extra, learner(fast, x), "classifier.")
        return {"loss": learner.loss(outputs, y), **learner.metrics("train", outputs, y)}

    def task_head(self, support: torch.Tensor, y_support: torch.Tensor) -> Params:
        """The initial classifier of a test task: zero (one row per possible label)."""
        rows = y_support.shape[-1]
        return {
            TASK_HEAD + "weight": support.new_zeros(rows, support.shape[-1]),
            TASK_HEAD + "bias": support.new_zeros(rows),
        }

    def adapt_for_test(
        self, learner, meta, x_support, y_support, *, steps, lr=None, observe: Observe | None = None
    ) -> Adaptation:
        support = learner(meta.network, x_support).detach()

        def forward(head: Params, buffers: Params, features: torch.Tensor) -> torch.Tensor:
            return present(self.classify(head, features, TASK_HEAD), y_support)

        return adapt(
            forward,
            self.task_head(support, y_support),
            {},
            support,
            y_support,
            loss_fn=lambda outputs, y: learner.loss(outputs, y).sum(),
            steps=steps,
            optimizer=self.optimizer(lr),
            first_order=True,
            observe=(lambda head: observe({**meta.network, **head})) if observe else None,
        )

    def predictor(self, learner, meta, x_support, y_support, x) -> Callable[[Params], Tensor]:
        """The embedding is frozen at test time: `x` is embedded once."""
        features = learner(meta.network, x)
        return lambda fast: present(self.classify(fast, features, TASK_HEAD), y_support)


@dataclass(frozen=True)
class BaselinePlusPlus(Baseline):
    """Baseline with cosine classifiers: logits are `scale` times the cosine similarity of the
    embedding to each class's weight vector (no bias). A test task's classifier starts at the
    normalised mean support embedding of each class, and is then fitted like Baseline's."""

    scale: float = 0.0
    """The cosine's scale; 0 = the paper's code: 2 up to 200 classes, 10 above."""
    cosine = True

    def classify(self, head: Params, features: torch.Tensor, prefix: str) -> torch.Tensor:
        scale = self.scale or (2.0 if self.classes <= 200 else 10.0)
        weight = F.normalize(head[prefix + "weight"], dim=-1)
        return scale * F.normalize(features, dim=-1) @ weight.transpose(-1, -2)

    def task_head(self, support: torch.Tensor, y_support: torch.Tensor) -> Params:
        labels = torch.arange(y_support.shape[-1], device=y_support.device)
        members = (y_support[:, None] == labels).to(support.dtype)
        means = (members.T @ F.normalize(support, dim=-1)) / members.sum(0).clamp(min=1)[:, None]
        return {TASK_HEAD + "weight": means}


def present(logits: torch.Tensor, y_support: torch.Tensor) -> torch.Tensor:
    """`logits` with the columns of labels absent from the support set at the lowest value:
    a classifier with one row per possible label then acts as one over the task's classes."""
    labels = torch.arange(logits.shape[-1], device=logits.device)
    found = (y_support[..., :, None] == labels).any(-2)
    return torch.where(found[..., None, :], logits, torch.finfo(logits.dtype).min)
