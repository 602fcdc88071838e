from torch import nn

from metagrad.algorithms.base import MetaAlgorithm
from metagrad.algorithms.inner import INNER_OPTIMIZERS, Adaptation, InnerOptimizer, adam, adapt, sgd
from metagrad.algorithms.maml import MAML
from metagrad.algorithms.pretrain import Pretrain
from metagrad.algorithms.reptile import Reptile
from metagrad.algorithms.strategy import (
    STRATEGIES,
    TaskParts,
    accumulate_gradient,
    fastest_strategy,
)
from metagrad.config import Config
from metagrad.models.functional import functional_forward, tasks_forward
from metagrad.objectives import Objective

__all__ = [
    "INNER_OPTIMIZERS",
    "MAML",
    "STRATEGIES",
    "Adaptation",
    "InnerOptimizer",
    "MetaAlgorithm",
    "Pretrain",
    "Reptile",
    "TaskParts",
    "accumulate_gradient",
    "adam",
    "adapt",
    "build_algorithm",
    "fastest_strategy",
    "sgd",
]


def build_algorithm(
    config: Config, model: nn.Module, objective: Objective, strategy: str
) -> MetaAlgorithm:
    """The algorithm named by `config.algorithm` for `model`, running its tasks with `strategy`."""
    settings = config.algorithm
    common = dict(
        forward=functional_forward(model),
        forward_tasks=tasks_forward(model),
        objective=objective,
        inner_steps=settings.inner_steps,
        inner_optimizer=INNER_OPTIMIZERS[settings.inner_optimizer](settings.inner_lr),
        strategy=strategy,
        chunk_size=config.train.chunk_size,
        checkpoint_inner=config.train.checkpoint_inner,
    )
    if settings.name == "maml":
        return MAML(**common, first_order=settings.first_order)
    return {"reptile": Reptile, "pretrain": Pretrain}[settings.name](**common)
