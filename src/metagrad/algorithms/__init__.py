"""The math of meta-learning: one inner loop (`adapt`), one file per algorithm."""

from metagrad.algorithms.anil import ANIL
from metagrad.algorithms.base import Algorithm, Learner, MetaParameters, split_head
from metagrad.algorithms.boil import BOIL
from metagrad.algorithms.inner import INNER_OPTIMIZERS, Adaptation, InnerOptimizer, adam, adapt, sgd
from metagrad.algorithms.maml import MAML
from metagrad.algorithms.mamlpp import MAMLPlusPlus
from metagrad.algorithms.metasgd import MetaSGD
from metagrad.algorithms.pretrain import Pretrain
from metagrad.algorithms.reptile import Reptile
from metagrad.config import FIRST_ORDER_ALGORITHMS, Config
from metagrad.errors import ConfigError
from metagrad.user_code import call, import_object, is_user_code

__all__ = [
    "ANIL",
    "BOIL",
    "INNER_OPTIMIZERS",
    "MAML",
    "Adaptation",
    "Algorithm",
    "InnerOptimizer",
    "Learner",
    "MAMLPlusPlus",
    "MetaParameters",
    "MetaSGD",
    "Pretrain",
    "Reptile",
    "adam",
    "adapt",
    "build_algorithm",
    "sgd",
    "split_head",
]

BUILT_IN: dict[str, type[Algorithm]] = {
    "maml": MAML,
    "reptile": Reptile,
    "pretrain": Pretrain,
    "anil": ANIL,
    "boil": BOIL,
    "metasgd": MetaSGD,
    "mamlpp": MAMLPlusPlus,
}
"""The algorithms `algorithm.name` names (`metagrad.config.BUILT_IN_ALGORITHMS`)."""


def build_algorithm(config: Config) -> Algorithm:
    """The algorithm named by `config.algorithm`: a built-in one, or a user's `Algorithm`
    subclass (`algorithm.name: package.module:Class`); either is given `algorithm.kwargs` too."""
    settings = config.algorithm
    arguments = dict(
        inner_steps=settings.inner_steps,
        inner_lr=settings.inner_lr,
        inner_optimizer=settings.inner_optimizer,
    )
    if settings.name in FIRST_ORDER_ALGORITHMS:
        arguments["first_order"] = settings.first_order
    arguments.update(settings.kwargs)
    if not is_user_code(settings.name):
        return call(BUILT_IN[settings.name], arguments, settings.name, "algorithm.name")
    cls = import_object(settings.name, "algorithm.name")
    algorithm = call(cls, arguments, settings.name, "algorithm.name")
    if not isinstance(algorithm, Algorithm):
        raise ConfigError(
            f"algorithm.name = {settings.name!r} made a {type(algorithm).__name__}, not a "
            "metagrad.algorithms.Algorithm: subclass it (see docs/your-own-work.md)"
        )
    return algorithm
