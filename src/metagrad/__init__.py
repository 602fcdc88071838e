"""metagrad: gradient-based meta-learning (MAML, first-order MAML, Reptile, ANIL, BOIL, Meta-SGD,
MAML++) and the baselines they are judged against (Prototypical Networks, Baseline, Baseline++)
for PyTorch."""

from metagrad.algorithms import (
    ANIL,
    BOIL,
    MAML,
    Algorithm,
    Baseline,
    BaselinePlusPlus,
    MAMLPlusPlus,
    MetaParameters,
    MetaSGD,
    Pretrain,
    ProtoNets,
    Reptile,
    adam,
    adapt,
    sgd,
)
from metagrad.config import Config, load_config
from metagrad.data import ClassImages, load_omniglot
from metagrad.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    Interrupted,
    MetagradError,
    NonFiniteError,
)
from metagrad.evaluate import evaluate_run
from metagrad.execution import ExecutionPlan, MetaLearner, Network, choose_plan, meta_gradient
from metagrad.models import MLP, Conv4, exact_modules, functional_forward, meta_parameters
from metagrad.objectives import CLASSIFICATION, REGRESSION
from metagrad.tasks import EpisodeSampler, SinusoidTasks, TaskBatch
from metagrad.train import fit

__version__ = "0.1.0"

__all__ = [
    "ANIL",
    "BOIL",
    "CLASSIFICATION",
    "MAML",
    "MLP",
    "REGRESSION",
    "Algorithm",
    "Baseline",
    "BaselinePlusPlus",
    "CheckpointError",
    "ClassImages",
    "Config",
    "ConfigError",
    "Conv4",
    "DatasetError",
    "EpisodeSampler",
    "ExecutionPlan",
    "Interrupted",
    "MAMLPlusPlus",
    "MetaLearner",
    "MetaParameters",
    "MetaSGD",
    "MetagradError",
    "Network",
    "NonFiniteError",
    "Pretrain",
    "ProtoNets",
    "Reptile",
    "SinusoidTasks",
    "TaskBatch",
    "adam",
    "adapt",
    "choose_plan",
    "evaluate_run",
    "exact_modules",
    "fit",
    "functional_forward",
    "load_config",
    "load_omniglot",
    "meta_gradient",
    "meta_parameters",
    "sgd",
]
