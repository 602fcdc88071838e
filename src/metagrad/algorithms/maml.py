"""MAML (Finn et al., 2017) and its first-order approximation."""

from __future__ import annotations

from dataclasses import dataclass

from metagrad.algorithms.base import MetaAlgorithm
from metagrad.algorithms.strategy import Inner, Metrics, Outer
from metagrad.models.functional import Params


@dataclass(frozen=True)
class MAML(MetaAlgorithm):
    """Meta-loss: the query loss at the adapted parameters, differentiated through `adapt()`.

    With `first_order`, the inner gradients are detached: the meta-gradient is then the query
    loss gradient at φ, applied to θ (FOMAML).
    """

    first_order: bool = False

    def parts(self, params: Params, buffers: Params, batched: bool) -> tuple[Inner, Outer]:
        def inner(x_support, y_support):
            return self.inner(params, buffers, x_support, y_support, self.first_order, batched)

        def outer(fast, x_support, y_support, x_query, y_query) -> Metrics:
            outputs = self.network(batched)(fast, buffers, x_query)
            loss = self.loss(batched)(outputs, y_query)
            return {"loss": loss, **self.metrics("query", outputs, y_query, batched)}

        return inner, outer
