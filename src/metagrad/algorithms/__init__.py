"""The math of meta-learning: one inner loop (`adapt`), one file per algorithm."""

from metagrad.algorithms.base import Algorithm, Learner, MetaParameters
from metagrad.algorithms.inner import INNER_OPTIMIZERS, Adaptation, InnerOptimizer, adam, adapt, sgd
from metagrad.algorithms.maml import MAML
from metagrad.algorithms.pretrain import Pretrain
from metagrad.algorithms.reptile import Reptile
from metagrad.config import Config
from metagrad.errors import ConfigError
from metagrad.user_code import call, import_object, is_user_code

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
    """The algorithm named by `config.algorithm`: a built-in one, or a user's `Algorithm`
    subclass (`algorithm.name: package.module:Class`, given `algorithm.kwargs` too)."""
    settings = config.algorithm
    common = dict(
        inner_steps=settings.inner_steps,
        inner_lr=settings.inner_lr,
        inner_optimizer=settings.inner_optimizer,
    )
    if is_user_code(settings.name):
        cls = import_object(settings.name, "algorithm.name")
        algorithm = call(cls, {**common, **settings.kwargs}, settings.name, "algorithm.name")
        if not isinstance(algorithm, Algorithm):
            raise ConfigError(
                f"algorithm.name = {settings.name!r} made a {type(algorithm).__name__}, not a "
                "metagrad.algorithms.Algorithm: subclass it (see docs/your-own-work.md)"
            )
        return algorithm
    if settings.name == "maml":
        return MAML(**common, first_order=settings.first_order)
    return {"reptile": Reptile, "pretrain": Pretrain}[settings.name](**common)
