"""Meta-SGD (Li, Zhou, Chen and Li, 2017)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metagrad.algorithms.base import MetaParameters, Metrics
from metagrad.algorithms.inner import InnerOptimizer
from metagrad.algorithms.maml import MAML
from metagrad.errors import ConfigError
from metagrad.models.functional import Params


@dataclass(frozen=True)
class MetaSGD(MAML):
    """MAML with a learned inner learning rate per parameter entry: φ ← φ − α ∘ ∇L(φ).

    α has θ's shapes (meta-parameters `lr.<name>`, initialised to `inner_lr`) and is learned
    with θ by the outer optimizer, through the query loss (second order unless `first_order`).
    Test-time adaptation steps with the learned α; an explicit test learning rate `lr` scales
    it by `lr / inner_lr`, so that `lr = inner_lr` changes nothing.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inner_optimizer != "sgd":
            raise ConfigError(
                f"inner_optimizer = {self.inner_optimizer!r} cannot run Meta-SGD, whose inner "
                "step is SGD with a learned learning rate per entry; set inner_optimizer = sgd"
            )

    def extra_parameters(self, network: Params) -> Params:
        return {f"lr.{k}": torch.full_like(p, self.inner_lr) for k, p in network.items()}

    def learned_sgd(self, meta: MetaParameters, scale: float = 1.0) -> InnerOptimizer:
        """SGD at the learned rates α (times `scale`).

        α travels in the optimizer's state, so a step that is recomputed in the backward pass
        differentiates it too."""

        def init(params: Params) -> tuple:
            return ({k: meta.extra[f"lr.{k}"] for k in params},)

        def step(params: Params, grads: Params, state: tuple) -> tuple[Params, tuple]:
            (rates,) = state
            return {k: p - scale * rates[k] * grads[k] for k, p in params.items()}, state

        return InnerOptimizer(init=init, step=step)

    def inner(self, learner, meta, x_support, y_support) -> tuple[Params, Metrics]:
        return self.adapted(
            learner,
            meta.network,
            x_support,
            y_support,
            first_order=self.first_order,
            optimizer=self.learned_sgd(meta),
        )

    def test_optimizer(self, meta: MetaParameters, lr: float | None = None) -> InnerOptimizer:
        return self.learned_sgd(meta, 1.0 if lr is None else lr / self.inner_lr)
