from metagrad.models.batch_norm import TaskBatchNorm, with_batch_norm
from metagrad.models.conv4 import Conv4
from metagrad.models.exact import exact_modules
from metagrad.models.functional import Forward, Params, functional_forward, meta_parameters
from metagrad.models.mlp import MLP

__all__ = [
    "MLP",
    "Conv4",
    "Forward",
    "Params",
    "TaskBatchNorm",
    "exact_modules",
    "functional_forward",
    "meta_parameters",
    "with_batch_norm",
]
