from metagrad.models.conv4 import Conv4, TaskBatchNorm2d
from metagrad.models.functional import Forward, Params, functional_forward, meta_parameters
from metagrad.models.mlp import MLP

__all__ = [
    "MLP",
    "Conv4",
    "Forward",
    "Params",
    "TaskBatchNorm2d",
    "functional_forward",
    "meta_parameters",
]
