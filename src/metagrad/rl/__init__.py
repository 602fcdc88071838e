"""Meta-reinforcement learning: MAML with policy-gradient inner steps and a TRPO outer step.

`train_navigation` meta-trains a Gaussian MLP policy on batched 2D navigation (Finn et al.
2017, §5.3); `evaluate` measures the return after 0, 1, … policy-gradient steps on new goals.
"""

from metagrad.rl.maml_trpo import MAMLTRPO, Evaluation, inner_adapt, pg_loss, surrogate
from metagrad.rl.navigation import Navigation2D
from metagrad.rl.policy import Gaussian, init_policy, kl_divergence, log_prob, policy
from metagrad.rl.returns import (
    advantages,
    discounted_returns,
    fit_linear_baseline,
    gae,
    linear_baseline,
    normalise,
)
from metagrad.rl.sampling import Batch, Episodes, rollout, to_batch
from metagrad.rl.train import TrainResult, evaluate, train_navigation, train_pretrained
from metagrad.rl.trpo import TRPO, conjugate_gradient, line_search, trpo_step

__all__ = [
    "MAMLTRPO",
    "TRPO",
    "Batch",
    "Episodes",
    "Evaluation",
    "Gaussian",
    "Navigation2D",
    "TrainResult",
    "advantages",
    "conjugate_gradient",
    "discounted_returns",
    "evaluate",
    "fit_linear_baseline",
    "gae",
    "init_policy",
    "inner_adapt",
    "kl_divergence",
    "line_search",
    "linear_baseline",
    "log_prob",
    "normalise",
    "pg_loss",
    "policy",
    "rollout",
    "surrogate",
    "to_batch",
    "train_navigation",
    "train_pretrained",
    "trpo_step",
]
