"""Meta-reinforcement learning: MAML with policy-gradient inner steps and a TRPO outer step, or
ProMP's PPO-clip outer step and low-variance-curvature inner loss.

`train_maml` meta-trains a Gaussian MLP policy on a task environment (Finn et al. 2017, §5.3):
batched 2D navigation (`Navigation2D`), or HalfCheetah and Ant direction / velocity on Gymnasium
and MuJoCo (`HalfCheetahTasks`, `AntTasks`, with the `[rl]` extra; imported on first use).
`evaluate` measures the return after 0, 1, … policy-gradient steps on new tasks (`fixed_tasks`).
"""

from typing import Any

from metagrad.rl.environment import TaskEnvironment, Transition, fixed_tasks
from metagrad.rl.maml_trpo import (
    MAMLTRPO,
    Evaluation,
    inner_adapt,
    inner_path,
    pg_loss,
    surrogate,
)
from metagrad.rl.navigation import Navigation2D
from metagrad.rl.policy import Gaussian, init_policy, kl_divergence, log_prob, policy
from metagrad.rl.ppo import PPO, ppo_step
from metagrad.rl.returns import (
    advantages,
    discounted_returns,
    fit_linear_baseline,
    gae,
    linear_baseline,
    normalise,
)
from metagrad.rl.sampling import Batch, Episodes, rollout, to_batch
from metagrad.rl.train import TrainResult, evaluate, train_maml, train_pretrained
from metagrad.rl.trpo import TRPO, conjugate_gradient, line_search, trpo_step

__all__ = [
    "MAMLTRPO",
    "PPO",
    "TRPO",
    "AntTasks",
    "Batch",
    "Episodes",
    "Evaluation",
    "Gaussian",
    "HalfCheetahTasks",
    "Navigation2D",
    "TaskEnvironment",
    "TrainResult",
    "Transition",
    "advantages",
    "conjugate_gradient",
    "discounted_returns",
    "evaluate",
    "fit_linear_baseline",
    "fixed_tasks",
    "gae",
    "init_policy",
    "inner_adapt",
    "inner_path",
    "kl_divergence",
    "line_search",
    "linear_baseline",
    "log_prob",
    "normalise",
    "pg_loss",
    "policy",
    "ppo_step",
    "rollout",
    "surrogate",
    "to_batch",
    "train_maml",
    "train_pretrained",
    "trpo_step",
]


def __getattr__(name: str) -> Any:
    """`HalfCheetahTasks` and `AntTasks` import Gymnasium and MuJoCo (the `[rl]` extra) only
    when asked for."""
    if name == "HalfCheetahTasks":
        from metagrad.rl.cheetah import HalfCheetahTasks

        return HalfCheetahTasks
    if name == "AntTasks":
        from metagrad.rl.ant import AntTasks

        return AntTasks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
