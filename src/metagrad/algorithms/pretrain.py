"""Joint pre-training: the baseline the MAML paper compares against."""

from __future__ import annotations

from dataclasses import dataclass

from metagrad.algorithms.base import Algorithm, Learner, MetaParameters, Metrics
from metagrad.models.functional import Params
from metagrad.tasks.batch import Task


@dataclass(frozen=True)
class Pretrain(Algorithm):
    """Plain supervised training on every example of every meta-training task, no inner loop.

    At test time the model is fine-tuned with the same `adapt()` as the meta-learned ones.
    Metrics: `train_*` of θ on every example of the task.
    """

    def inner(self, learner, meta, x_support, y_support) -> tuple[Params, Metrics]:
        return meta.network, {}

    def outer(self, learner: Learner, meta: MetaParameters, fast: Params, task: Task) -> Metrics:
        x = learner.cat(task.x_support, task.x_query)
        y = learner.cat(task.y_support, task.y_query)
        outputs = learner(fast, x)
        return {"loss": learner.loss(outputs, y), **learner.metrics("train", outputs, y)}
