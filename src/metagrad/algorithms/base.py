"""What an algorithm is: the math of one task, and nothing about how tasks are executed.

An algorithm is written once, for one task:

- `inner(learner, meta, x_support, y_support) -> (φ, metrics)`: the inner loop, through
  `learner.adapt()`;
- `outer(learner, meta, φ, task) -> {"loss": …, metrics}`: the loss whose gradient w.r.t. the
  meta-parameters, averaged over the tasks of a meta-batch, is the meta-gradient;
- `extra_parameters(network_params)`: its own meta-parameters beside the network's (learned
  inner learning rates, per-step weights, …), empty unless it has some;
- `adapt_for_test(...)`: how it adapts at test time (validation, `metagrad eval`, the plots);
- `predictor(...)`: its outputs for new inputs once adapted (the network's, unless it classifies
  by other means: prototypes, a head of its own).

The `learner` it is handed is the network and the task objective as the execution machinery
(`metagrad.execution`) runs them: one task at a time, under `vmap`, or a stack of tasks at once.
An algorithm only calls it, so the same code serves every way of running it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple, Protocol

import torch

from metagrad.algorithms.inner import INNER_OPTIMIZERS, Adaptation, InnerOptimizer, Observe
from metagrad.errors import ConfigError
from metagrad.models.functional import Params
from metagrad.tasks.batch import Task

Metrics = dict[str, torch.Tensor]


class MetaParameters(NamedTuple):
    """What the outer loop learns: the network's parameters θ and the algorithm's own."""

    network: Params
    extra: Params

    def named(self) -> dict[str, torch.Tensor]:
        """Every meta-parameter by a unique name (`extra.` before the algorithm's own)."""
        return {**self.network, **{f"extra.{k}": v for k, v in self.extra.items()}}

    def detached(self) -> MetaParameters:
        return MetaParameters(*({k: v.detach() for k, v in part.items()} for part in self))


class Learner(Protocol):
    """The network and the task objective, as an algorithm sees them for one task."""

    def __call__(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """The network's outputs for inputs `x` with parameters `params`."""

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The task's loss (a scalar)."""

    def metrics(self, prefix: str, outputs: torch.Tensor, y: torch.Tensor) -> Metrics:
        """The task's metrics, detached, named `<prefix>_<metric>`."""

    def adapt(
        self,
        params: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        steps: int,
        optimizer: InnerOptimizer,
        first_order: bool,
        observe: Observe | None = None,
        fixed: Params | None = None,
    ) -> Adaptation:
        """`steps` inner steps from `params` on `(x, y)` (`metagrad.algorithms.adapt`); the
        network's other parameters are taken from `fixed` and not adapted."""

    def total(self, values: torch.Tensor) -> torch.Tensor:
        """The sum of a per-example or per-parameter quantity over the task (a scalar)."""

    def cat(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """The examples of `first` followed by those of `second`."""


@dataclass(frozen=True)
class Algorithm:
    """Base class of the meta-learning algorithms; see the module docstring."""

    inner_steps: int = 1
    """Inner-loop steps in meta-training."""
    inner_lr: float = 0.01
    """Inner learning rate α."""
    inner_optimizer: str = "sgd"
    """sgd, or adam (β1 = 0, as in the Reptile paper)."""

    train_labels: ClassVar[Literal["task", "class"]] = "task"
    """How meta-training tasks are labelled: `task`, 0..N−1 within each task; `class`, the
    index of each example's class among all the training classes (for algorithms that learn one
    classifier over every training class, as Baseline does). Test tasks are always `task`."""
    headless: ClassVar[bool] = False
    """Whether the network is an embedding without a classification head (the algorithm
    classifies by other means); then tasks may have other numbers of ways at test time."""

    def __post_init__(self) -> None:
        if self.inner_optimizer not in INNER_OPTIMIZERS:
            raise ConfigError(
                f"inner_optimizer = {self.inner_optimizer!r} is not an inner optimizer; "
                f"choose one of {', '.join(INNER_OPTIMIZERS)}"
            )

    def for_network(self, normalisation: tuple[str, ...]) -> Algorithm:
        """The algorithm for the network it will train, called once before `extra_parameters`:
        `normalisation` names the network's normalisation-layer parameters (batch, group, layer
        norm weights and biases, found from the module types). Default: unchanged."""
        return self

    def at_step(self, step: int) -> Algorithm:
        """The algorithm as it runs at outer step `step` (0-based): its schedules resolved, e.g.
        a loss weighting or a derivative order that changes during training. The training loop
        calls it before every meta-gradient, so a resumed run follows the same schedule.
        Default: unchanged."""
        return self

    def extra_parameters(self, network: Params) -> Params:
        """Initial values of the algorithm's own meta-parameters (none by default)."""
        return {}

    def statistics_steps(self) -> int:
        """How many sets of batch-norm running statistics the network keeps, one per φ_k
        (MAML++'s BNRS); 0 (default): one set per layer, where the network keeps one."""
        return 0

    def forward_steps(self, phase: str, forwards: int) -> tuple[int, ...]:
        """With `statistics_steps`: the k of the φ_k each of a task's `forwards` forward passes
        runs at, in order, in `phase`: `inner` (the support forward pass of each step, φ_0 to
        φ_{S−1}) or `outer` (those of `outer`, in the order it runs them)."""
        if phase == "inner":
            return tuple(range(forwards))
        return (self.inner_steps,) * forwards

    def inner(
        self,
        learner: Learner,
        meta: MetaParameters,
        x_support: torch.Tensor,
        y_support: torch.Tensor,
    ) -> tuple[Params, Metrics]:
        """φ, the parameters adapted to the support set, and metrics of the adaptation."""
        raise NotImplementedError

    def outer(self, learner: Learner, meta: MetaParameters, fast: Params, task: Task) -> Metrics:
        """`{"loss": the task's meta-loss, metrics…}` for the adapted parameters `fast`."""
        raise NotImplementedError

    def adapt_for_test(
        self,
        learner: Learner,
        meta: MetaParameters,
        x_support: torch.Tensor,
        y_support: torch.Tensor,
        *,
        steps: int,
        lr: float | None = None,
        observe: Observe | None = None,
    ) -> Adaptation:
        """Test-time adaptation: `steps` inner steps of the parameters `split` adapts (lr `lr`,
        or the training one), observing the network's parameters after each."""
        adapted, fixed = self.split(meta.network)
        return learner.adapt(
            adapted,
            x_support,
            y_support,
            steps=steps,
            optimizer=self.test_optimizer(meta, lr),
            first_order=True,
            observe=observe,
            fixed=fixed,
        )

    def test_optimizer(self, meta: MetaParameters, lr: float | None = None) -> InnerOptimizer:
        """The inner optimizer of test-time adaptation, at test learning rate `lr` (None: the
        training one): `optimizer(lr)`, unless the algorithm learns its inner rates."""
        return self.optimizer(lr)

    def predictor(
        self,
        learner: Learner,
        meta: MetaParameters,
        x_support: torch.Tensor,
        y_support: torch.Tensor,
        x: torch.Tensor,
    ) -> Callable[[Params], torch.Tensor]:
        """The outputs for inputs `x` of the task whose support set is given, as a function of
        the parameters `adapt_for_test` passes to `observe` (the network's outputs by default).
        Called once per task, so what does not depend on those parameters is computed once."""
        return lambda fast: learner(fast, x)

    def split(self, params: Params) -> tuple[Params, Params]:
        """`(adapted, fixed)`: the network parameters the inner loop adapts, and the others
        (all adapted by default)."""
        return params, {}

    def optimizer(self, lr: float | None = None) -> InnerOptimizer:
        """The inner optimizer at learning rate `lr` (default: `inner_lr`)."""
        return INNER_OPTIMIZERS[self.inner_optimizer](lr or self.inner_lr)

    def adapted(
        self,
        learner: Learner,
        params: Params,
        x_support: torch.Tensor,
        y_support: torch.Tensor,
        *,
        first_order: bool,
        optimizer: InnerOptimizer | None = None,
        fixed: Params | None = None,
    ) -> tuple[Params, Metrics]:
        """`inner_steps` steps from `params` on the support set (with `optimizer`, default
        `self.optimizer()`; the parameters in `fixed` take part but are not adapted), and
        `support_*` metrics of the parameters before adaptation (taken from the first step, so
        free). Returns the adapted `params` only."""
        adaptation = learner.adapt(
            params,
            x_support,
            y_support,
            steps=self.inner_steps,
            optimizer=optimizer or self.optimizer(),
            first_order=first_order,
            fixed=fixed,
        )
        outputs = adaptation.initial_outputs
        if outputs is None:  # no inner step: one forward pass just for the metrics
            with torch.no_grad():
                outputs = learner({**(fixed or {}), **params}, x_support)
        return adaptation.params, learner.metrics("support", outputs, y_support)


def split_head(params: Params, prefix: str) -> tuple[Params, Params]:
    """`(body, head)`: the head is every parameter whose name starts with `prefix`; when none
    does, the last layer, taken to be the last two parameters (a linear layer's weight and
    bias, e.g. `4.weight` and `4.bias` of an `nn.Sequential` MLP)."""
    names = [k for k in params if k.startswith(prefix)] or list(params)[-2:]
    head = {k: params[k] for k in names}
    return {k: v for k, v in params.items() if k not in head}, head
