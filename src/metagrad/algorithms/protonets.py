"""Prototypical Networks (Snell, Swersky and Zemel, 2017)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from metagrad.algorithms.base import Algorithm, Learner, MetaParameters, Metrics
from metagrad.algorithms.inner import Adaptation, Observe
from metagrad.models.functional import Params
from metagrad.tasks.batch import Task


def class_scores(
    support: torch.Tensor, y_support: torch.Tensor, query: torch.Tensor
) -> torch.Tensor:
    """Minus the squared Euclidean distance of each query embedding to each class prototype
    (the mean support embedding of the class): the logits of Prototypical Networks.

    Embeddings are `[..., n, d]` (one task, or a stack of tasks). The labels need not be
    known in advance: one column per possible label 0..n_support−1, and labels with no support
    example get the lowest score, so the argmax and the softmax are those over the task's own
    classes.
    """
    labels = torch.arange(y_support.shape[-1], device=y_support.device)
    members = (y_support[..., :, None] == labels).to(support.dtype)  # [..., n_support, labels]
    counts = members.sum(-2)
    prototypes = (members.transpose(-1, -2) @ support) / counts.clamp(min=1)[..., None]
    distances = (query[..., :, None, :] - prototypes[..., None, :, :]).square().sum(-1)
    lowest = torch.finfo(distances.dtype).min
    return torch.where(counts[..., None, :] > 0, -distances, lowest)


@dataclass(frozen=True)
class ProtoNets(Algorithm):
    """No inner loop: a task's classes are the means of their support embeddings (prototypes),
    and a query example is classified by its squared Euclidean distance to each; the meta-loss
    is the query cross-entropy of those scores.

    The network is an embedding (no classification head: `headless`), so the number of ways
    may differ between training and test (the paper trains on 60-way Omniglot tasks). At test
    time nothing is adapted: the metrics are the same after every "inner step".
    """

    inner_steps: int = 0
    headless = True

    def inner(self, learner, meta, x_support, y_support) -> tuple[Params, Metrics]:
        return meta.network, {}

    def predictor(self, learner, meta, x_support, y_support, x) -> Callable[[Params], Tensor]:
        """Support and `x` are embedded in one batch, as the paper's code does (batch norm
        then normalises them together)."""
        both, n_support = learner.cat(x_support, x), y_support.shape[-1]

        def scores(fast: Params) -> Tensor:
            embeddings = learner(fast, both)
            support, query = embeddings[..., :n_support, :], embeddings[..., n_support:, :]
            return class_scores(support, y_support, query)

        return scores

    def outer(self, learner: Learner, meta: MetaParameters, fast: Params, task: Task) -> Metrics:
        scores = self.predictor(learner, meta, task.x_support, task.y_support, task.x_query)
        outputs = scores(fast)
        loss = learner.loss(outputs, task.y_query)
        return {"loss": loss, **learner.metrics("query", outputs, task.y_query)}

    def adapt_for_test(
        self, learner, meta, x_support, y_support, *, steps, lr=None, observe: Observe | None = None
    ) -> Adaptation:
        observed = observe(meta.network) if observe else {}
        repeated = {k: v.expand(steps + 1, *v.shape) for k, v in observed.items()}
        return Adaptation(meta.network, x_support.new_zeros(0), repeated, None)
