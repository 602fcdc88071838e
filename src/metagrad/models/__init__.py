from metagrad.models.batch_norm import TaskBatchNorm2d, fused_batch_norm
from metagrad.models.conv4 import Conv4
from metagrad.models.functional import (
    Forward,
    Params,
    functional_forward,
    meta_parameters,
    tasks_forward,
)
from metagrad.models.mlp import MLP

__all__ = [
    "MLP",
    "Conv4",
    "Forward",
    "Params",
    "TaskBatchNorm2d",
    "functional_forward",
    "fused_batch_norm",
    "meta_parameters",
    "tasks_forward",
]
