"""The machinery: how the tasks of a meta-batch are executed, never what is computed.

Strategies (`vmap`, `loop`, `hybrid`, `batched`), chunking, inner-step checkpointing, the
memory planner and the allocator live here, behind one call:
`meta_gradient(algorithm, network, meta, batch, plan)`.
"""

from metagrad.execution.allocator import tune_allocator
from metagrad.execution.budget import plan_memory
from metagrad.execution.meta_learner import MetaLearner
from metagrad.execution.network import Network, StackLearner, TaskLearner
from metagrad.execution.plan import ExecutionPlan, choose_plan, meta_gradient, strategies_for
from metagrad.execution.strategies import STRATEGIES

__all__ = [
    "STRATEGIES",
    "ExecutionPlan",
    "MetaLearner",
    "Network",
    "StackLearner",
    "TaskLearner",
    "choose_plan",
    "meta_gradient",
    "plan_memory",
    "strategies_for",
    "tune_allocator",
]
