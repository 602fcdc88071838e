"""The math of meta-learning: one inner loop (`adapt`), one file per algorithm."""

from metagrad.algorithms.base import Algorithm, Learner, MetaParameters
from metagrad.algorithms.inner import INNER_OPTIMIZERS, Adaptation, InnerOptimizer, adam, adapt, sgd
from metagrad.algorithms.maml import MAML
from metagrad.algorithms.pretrain import Pretrain
from metagrad.algorithms.reptile import Reptile
from metagrad.config import Config

__all__ = [
    "INNER_OPTIMIZERS",
    "MAML",
    "Adaptation",
    "Algorithm",
    "InnerOptimizer",
    "Learner",
    "MetaParameters",
    "Pretrain",
    "Reptile",
    "adam",
    "adapt",
    "build_algorithm",
    "sgd",
]


def build_algorithm(config: Config) -> Algorithm:
    """The algorithm named by `config.algorithm`."""
    settings = config.algorithm
    common = dict(
        inner_steps=settings.inner_steps,
        inner_lr=settings.inner_lr,
        inner_optimizer=settings.inner_optimizer,
    )
    if settings.name == "maml":
        return MAML(**common, first_order=settings.first_order)
    return {"reptile": Reptile, "pretrain": Pretrain}[settings.name](**common)
