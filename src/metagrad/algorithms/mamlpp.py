"""MAML++ (Antoniou, Edwards and Storkey, 2019, "How to train your MAML"), every part switchable.

The paper's changes to MAML, and where each lives here:

- LSLR (`lslr`): a learned inner learning rate per parameter tensor and per inner step,
  meta-parameters `lr.<step>.<name>` (scalars, initialised to `inner_lr`).
- MSL (`msl`, `msl_steps`): the meta-loss is a weighted sum of the query losses after every
  inner step, annealed towards the last step's alone over the first `msl_steps` outer steps.
- DA (`first_order_steps`): first-order meta-gradients for the first outer steps, then second
  order.
- BNWB (`per_step_bn`): one set of normalisation weights and biases per inner step,
  meta-parameters `bn.<k>.<name>` used by the network at φ_k (k = 1..S; φ_0 = θ uses the
  network's own), and not adapted by the inner loop.
- BNRS (`per_step_statistics`): one set of batch-norm running statistics per φ_k (k = 0..S),
  updated by the forward passes at φ_k and used by the network at φ_k when evaluation
  normalises with running statistics (`eval.batch_norm: running`).
- CA, cosine annealing of the outer learning rate, is a training-loop setting
  (`train.outer_lr_decay: cosine`, `train.outer_lr_min`), not an algorithm one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from metagrad.algorithms.base import Learner, MetaParameters, Metrics
from metagrad.algorithms.inner import InnerOptimizer
from metagrad.algorithms.maml import MAML
from metagrad.errors import ConfigError
from metagrad.models.functional import Params
from metagrad.tasks.batch import Task

MSL_MIN_WEIGHT = 0.03
"""MSL: the non-final weights never fall below this over the number of steps (official code)."""
PATH = "@"
"""Prefix of the intermediate φ_k that `inner` hands to `outer` for MSL: `@<k>.<name>`."""


@dataclass(frozen=True)
class MAMLPlusPlus(MAML):
    """MAML with the paper's LSLR, MSL, DA, BNWB and BNRS, each switchable; see the module docstring
    and docs/algorithms.md.

    `first_order` (from MAML) makes every step first order; `first_order_steps` only the first
    ones. The schedules (MSL weights, DA) are those of outer step `step`, which the training
    loop sets through `at_step`; a fresh algorithm is at step 0.
    """

    lslr: bool = True
    """Learned inner learning rate per parameter tensor and inner step."""
    msl: bool = True
    """Multi-step loss: the query losses after every inner step, weighted."""
    msl_steps: int = 5000
    """Outer steps over which the MSL weights anneal to the last step; after them, the last
    step's query loss alone (official Omniglot configs: 10 epochs of 500 iterations)."""
    first_order_steps: int = 0
    """DA: first-order meta-gradients for this many outer steps, then second order (0: off)."""
    per_step_bn: bool = True
    """BNWB: per-inner-step normalisation weights and biases (a no-op without normalisation)."""
    per_step_statistics: bool = False
    """BNRS: per-inner-step batch-norm running statistics (a no-op without batch norm). Off by
    default: only evaluation with `eval.batch_norm: running` reads them (docs/algorithms.md)."""
    normalisation: tuple[str, ...] = ()
    """The network's normalisation parameters (set by `for_network`)."""
    step: int = 0
    """The outer step the schedules are at (set by `at_step`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lslr and self.inner_optimizer != "sgd":
            raise ConfigError(
                f"inner_optimizer = {self.inner_optimizer!r} cannot run MAML++ with lslr = true, "
                "whose inner step is SGD at a learned rate per layer and step; set "
                "inner_optimizer = sgd or algorithm.kwargs.lslr = false"
            )
        if self.inner_steps < 1:
            raise ConfigError(
                f"inner_steps = {self.inner_steps} leaves MAML++ no inner step to learn a rate "
                "or a loss weight for; set algorithm.inner_steps >= 1"
            )
        for name in ("msl_steps", "first_order_steps", "step"):
            if getattr(self, name) < 0:
                raise ConfigError(f"MAML++ {name} = {getattr(self, name)} must be >= 0")
        if self.msl and self.msl_steps == 0:
            raise ConfigError(
                "MAML++ msl = true with msl_steps = 0 never uses the multi-step loss; give "
                "msl_steps > 0 (outer steps of annealing) or set msl = false"
            )

    # --- the schedules ------------------------------------------------------------------------

    def at_step(self, step: int) -> MAMLPlusPlus:
        return dataclasses.replace(self, step=step)

    def for_network(self, normalisation: tuple[str, ...]) -> MAMLPlusPlus:
        return dataclasses.replace(self, normalisation=tuple(normalisation))

    @property
    def second_order(self) -> bool:
        """Whether the meta-gradient at this step differentiates through the inner gradients."""
        return not self.first_order and self.step >= self.first_order_steps

    def loss_weights(self) -> tuple[float, ...] | None:
        """MSL: the weights of the query losses after steps 1..S at this outer step, summing to
        1; None when the meta-loss is the last step's query loss alone.

        They start uniform (1/S) and the non-final ones fall linearly by 1/(S·msl_steps) per
        outer step to a floor of 0.03/S, the final one taking the rest (the official code's
        schedule, per outer step instead of per epoch); from `msl_steps` on, the last step alone.
        """
        steps = self.inner_steps
        if not self.msl or steps < 2 or self.step >= self.msl_steps:
            return None
        start, floor = 1 / steps, MSL_MIN_WEIGHT / steps
        others = [max(start - self.step / (steps * self.msl_steps), floor)] * (steps - 1)
        return (*others, 1.0 - sum(others))

    # --- per-step running statistics (BNRS) --------------------------------------------------

    def statistics_steps(self) -> int:
        return self.inner_steps + 1 if self.per_step_statistics else 0

    def forward_steps(self, phase: str, forwards: int) -> tuple[int, ...]:
        """`outer` runs the query forward pass at φ_S, then, with MSL, those at φ_1..φ_{S−1}."""
        if phase == "inner":
            return tuple(range(forwards))
        return (self.inner_steps, *range(1, self.inner_steps))[:forwards]

    # --- meta-parameters ----------------------------------------------------------------------

    @property
    def per_step_norms(self) -> tuple[str, ...]:
        """The parameters BNWB replaces at every step instead of adapting them."""
        return self.normalisation if self.per_step_bn else ()

    def extra_parameters(self, network: Params) -> Params:
        extra: Params = {}
        if self.lslr:
            adapted = [k for k in network if k not in self.per_step_norms]
            for step in range(self.inner_steps):
                for k in adapted:
                    extra[f"lr.{step}.{k}"] = network[k].new_tensor(self.inner_lr).detach()
        for copy in range(1, self.inner_steps + 1):
            for k in self.per_step_norms:
                extra[f"bn.{copy}.{k}"] = network[k].detach().clone()
        return extra

    def stepper(self, meta: MetaParameters, lr: float | None = None) -> InnerOptimizer:
        """The inner step: the adapted parameters by SGD at the learned rates of this step (times
        `lr / inner_lr`), or by the inner optimizer (at `lr`) without LSLR; the per-step
        normalisation parameters replaced by those of the next step.

        The step counter and the per-step meta-parameters travel in the optimizer's state, so a
        step that is recomputed in the backward pass differentiates them too. Past the trained
        steps, the last step's rates and normalisation parameters are used.
        """
        steps, norms = self.inner_steps, self.per_step_norms
        base = None if self.lslr else self.optimizer(lr)
        scale = 1.0 if lr is None else lr / self.inner_lr

        def init(params: Params) -> tuple:
            adapted = {k: p for k, p in params.items() if k not in norms}
            return (0, dict(meta.extra), base.init(adapted) if base else ())

        def step(params: Params, grads: Params, state: tuple) -> tuple[Params, tuple]:
            index, per_step, inner = state
            adapted = {k: p for k, p in params.items() if k not in norms}
            if base:
                new, inner = base.step(adapted, {k: grads[k] for k in adapted}, inner)
            else:
                at = min(index, steps - 1)
                new = {
                    k: p - scale * per_step[f"lr.{at}.{k}"] * grads[k] for k, p in adapted.items()
                }
            copy = min(index + 1, steps)
            new |= {k: per_step[f"bn.{copy}.{k}"].expand_as(params[k]) for k in norms}
            return {k: new[k] for k in params}, (index + 1, per_step, inner)

        return InnerOptimizer(init=init, step=step)

    # --- the meta-objective -------------------------------------------------------------------

    def inner(self, learner, meta, x_support, y_support) -> tuple[Params, Metrics]:
        """φ after `inner_steps` steps; with MSL on, also φ_1..φ_{S−1} as `@<k>.<name>`."""
        multi_step = self.loss_weights() is not None
        adaptation = learner.adapt(
            meta.network,
            x_support,
            y_support,
            steps=self.inner_steps,
            optimizer=self.stepper(meta),
            first_order=not self.second_order,
            observe=dict if multi_step else None,
        )
        fast = dict(adaptation.params)
        if multi_step:
            path = adaptation.observations
            for k in range(1, self.inner_steps):
                fast |= {f"{PATH}{k}.{name}": values[k] for name, values in path.items()}
        return fast, learner.metrics("support", adaptation.initial_outputs, y_support)

    def outer(self, learner: Learner, meta: MetaParameters, fast: Params, task: Task) -> Metrics:
        final = {k: v for k, v in fast.items() if not k.startswith(PATH)}
        metrics = super().outer(learner, meta, final, task)
        weights = self.loss_weights()
        if weights is not None:
            loss = weights[-1] * metrics["loss"]
            for k, weight in enumerate(weights[:-1], start=1):
                at_k = {name: fast[f"{PATH}{k}.{name}"] for name in final}
                loss = loss + weight * learner.loss(learner(at_k, task.x_query), task.y_query)
            metrics["loss"] = loss
        return metrics

    def test_optimizer(self, meta: MetaParameters, lr: float | None = None) -> InnerOptimizer:
        return self.stepper(meta, lr)
