"""The math of meta-learning: one inner loop (`adapt`), one file per algorithm."""

import dataclasses

from metagrad.algorithms.anil import ANIL
from metagrad.algorithms.base import Algorithm, Learner, MetaParameters, split_head
from metagrad.algorithms.baseline import Baseline, BaselinePlusPlus
from metagrad.algorithms.boil import BOIL
from metagrad.algorithms.inner import INNER_OPTIMIZERS, Adaptation, InnerOptimizer, adam, adapt, sgd
from metagrad.algorithms.maml import MAML
from metagrad.algorithms.mamlpp import MAMLPlusPlus
from metagrad.algorithms.metasgd import MetaSGD
from metagrad.algorithms.pretrain import Pretrain
from metagrad.algorithms.protonets import ProtoNets
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
    "Baseline",
    "BaselinePlusPlus",
    "InnerOptimizer",
    "Learner",
    "MAMLPlusPlus",
    "MetaParameters",
    "MetaSGD",
    "Pretrain",
    "ProtoNets",
    "Reptile",
    "adam",
    "adapt",
    "algorithm_class",
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
    "protonets": ProtoNets,
    "baseline": Baseline,
    "baselinepp": BaselinePlusPlus,
    "mamlpp": MAMLPlusPlus,
}
"""The algorithms `algorithm.name` names (`metagrad.config.BUILT_IN_ALGORITHMS`)."""


def algorithm_class(config: Config) -> type[Algorithm]:
    """The class `config.algorithm.name` names: a built-in one, or a user's `Algorithm`
    subclass (`package.module:Class`)."""
    name = config.algorithm.name
    if not is_user_code(name):
        return BUILT_IN[name]
    cls = import_object(name, "algorithm.name")
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise ConfigError(
            f"algorithm.name = {name!r} is not a subclass of metagrad.algorithms.Algorithm: "
            "subclass it (see docs/your-own-work.md)"
        )
    return cls


def build_algorithm(config: Config, **shape: int) -> Algorithm:
    """The algorithm `config.algorithm` names, given `algorithm.kwargs` too. Fields of the
    algorithm named in `shape` (e.g. `classes`, `features`: what the data and the network
    determine) are filled from it unless `algorithm.kwargs` sets them."""
    settings = config.algorithm
    cls = algorithm_class(config)
    arguments = dict(
        inner_steps=settings.inner_steps,
        inner_lr=settings.inner_lr,
        inner_optimizer=settings.inner_optimizer,
    )
    if settings.name in FIRST_ORDER_ALGORITHMS:
        arguments["first_order"] = settings.first_order
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    arguments.update({k: v for k, v in shape.items() if k in fields})
    arguments.update(settings.kwargs)
    return call(cls, arguments, settings.name, "algorithm.name")
