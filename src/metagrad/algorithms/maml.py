"""MAML (Finn et al., 2017) and its first-order approximation."""

from __future__ import annotations

from dataclasses import dataclass

from metagrad.algorithms.base import Algorithm, Learner, MetaParameters, Metrics
from metagrad.models.functional import Params
from metagrad.tasks.batch import Task


@dataclass(frozen=True)
class MAML(Algorithm):
    """Meta-loss: the query loss at the adapted parameters, differentiated through `adapt()`.

    With `first_order`, the inner gradients are detached: the meta-gradient is then the query
    loss gradient at φ, applied to θ (FOMAML).
    """

    first_order: bool = False

    def inner(self, learner, meta, x_support, y_support) -> tuple[Params, Metrics]:
        adapted, fixed = self.split(meta.network)
        fast, metrics = self.adapted(
            learner, adapted, x_support, y_support, first_order=self.first_order, fixed=fixed
        )
        return {**meta.network, **fast}, metrics

    def outer(self, learner: Learner, meta: MetaParameters, fast: Params, task: Task) -> Metrics:
        outputs = learner(fast, task.x_query)
        loss = learner.loss(outputs, task.y_query)
        return {"loss": loss, **learner.metrics("query", outputs, task.y_query)}
