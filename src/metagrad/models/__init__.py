from torch import nn

from metagrad.config import Config
from metagrad.models.functional import Forward, Params, functional_forward, meta_parameters
from metagrad.models.mlp import MLP

__all__ = ["MLP", "Forward", "Params", "build_model", "functional_forward", "meta_parameters"]


def build_model(config: Config) -> nn.Module:
    """The network named by `config.model`, shaped for `config.task`."""
    return MLP(1, config.model.hidden, 1)
