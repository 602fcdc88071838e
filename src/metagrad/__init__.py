"""metagrad: gradient-based meta-learning (MAML, first-order MAML, Reptile) for PyTorch."""

from metagrad.algorithms import MAML, MetaAlgorithm, Pretrain, Reptile, adam, adapt, sgd
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
from metagrad.models import MLP, Conv4, functional_forward, meta_parameters
from metagrad.objectives import CLASSIFICATION, REGRESSION
from metagrad.tasks import EpisodeSampler, SinusoidTasks, TaskBatch
from metagrad.train import fit

__version__ = "0.1.0"

__all__ = [
    "CLASSIFICATION",
    "MAML",
    "MLP",
    "REGRESSION",
    "CheckpointError",
    "ClassImages",
    "Config",
    "ConfigError",
    "Conv4",
    "DatasetError",
    "EpisodeSampler",
    "Interrupted",
    "MetaAlgorithm",
    "MetagradError",
    "NonFiniteError",
    "Pretrain",
    "Reptile",
    "SinusoidTasks",
    "TaskBatch",
    "adam",
    "adapt",
    "evaluate_run",
    "fit",
    "functional_forward",
    "load_config",
    "load_omniglot",
    "meta_parameters",
    "sgd",
]
