"""The network and the task objective, run for one task or for a stack of tasks.

An algorithm calls a `Learner` (`metagrad.algorithms.base`) without knowing which of the two
it has: `TaskLearner` runs one task through `torch.func.functional_call` (inside `vmap` or a
loop), `StackLearner` runs a stack of T tasks at once through the network's own task-batched
forward (`forward_tasks`: one parameter copy per task, batched products, grouped convolutions)
and returns one loss per task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from metagrad.algorithms.base import Metrics
from metagrad.algorithms.inner import Adaptation, InnerOptimizer, Observe, adapt
from metagrad.errors import ConfigError
from metagrad.execution import running
from metagrad.execution.recompute import recomputed
from metagrad.models.batch_norm import TaskBatchNorm, with_batch_norm
from metagrad.models.exact import ExactGroupNorm, ExactLayerNorm, check_exact
from metagrad.models.functional import Params
from metagrad.objectives import Objective

NORMALISATION_LAYERS = (TaskBatchNorm, ExactGroupNorm, ExactLayerNorm)


@dataclass(frozen=True)
class Network:
    """A plain `nn.Module` called functionally, and the objective of its tasks."""

    module: nn.Module
    objective: Objective
    at_steps: tuple[nn.Module, ...] = ()
    """With running statistics per inner step, evaluated: the module at φ_0, φ_1, … (the last
    one serves the steps after it)."""
    buffers: Params = field(init=False)
    shapes: dict[str, torch.Size] = field(init=False)
    """Each parameter's shape, to tell θ from a stack of per-task copies."""
    normalisation: tuple[str, ...] = field(init=False)
    """The parameters of the normalisation layers (weights and biases of `TaskBatchNorm` and
    of the exact group and layer norms), in parameter order."""
    fused_module: nn.Module = field(init=False)
    """The module with PyTorch's fused batch-norm kernel, for tasks run one at a time outside
    `vmap` (`with_batch_norm`)."""
    running: tuple[str, ...] = field(init=False)
    """The batch-norm layers that keep running statistics (`metagrad.execution.running`)."""
    statistics_copies: int = field(init=False)
    """How many sets of running statistics each layer keeps, one per φ_k (0: one set, or none)."""

    def __post_init__(self) -> None:
        check_exact(self.module)
        object.__setattr__(self, "fused_module", with_batch_norm(self.module, fused=True))
        object.__setattr__(self, "running", running.running_layers(self.module))
        object.__setattr__(self, "statistics_copies", running.per_step_copies(self.module))
        object.__setattr__(self, "buffers", dict(self.module.named_buffers()))
        shapes = {k: p.shape for k, p in self.module.named_parameters()}
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "normalisation", normalisation_parameters(self.module))

    @property
    def can_stack(self) -> bool:
        """Whether the network has a task-batched form (`forward_tasks`); not with running
        statistics, which are recorded per layer call."""
        return hasattr(self.module, "forward_tasks") and not self.running

    def task_learner(
        self, checkpoint_inner: bool = False, fused: bool = False, record: bool = False
    ) -> TaskLearner:
        """One task at a time; `fused` for a caller that never runs it under `vmap`; `record`
        keeps the batch statistics of its forward passes, for the running statistics
        (meta-training only)."""
        return TaskLearner(self, checkpoint_inner, fused, [] if record and self.running else None)

    def with_running_statistics(self) -> Network:
        """The network normalising with its running statistics (PyTorch's evaluation mode)."""
        if not self.running:
            raise ConfigError(
                "eval.batch_norm = running, but this network keeps no batch-norm running "
                "statistics (metagrad's own networks normalise with the task's statistics); "
                "use transductive or inductive, a model with nn.BatchNorm*d layers, or MAML++ "
                "with algorithm.kwargs.per_step_statistics: true"
            )
        module = with_batch_norm(self.module, running=True)
        steps = tuple(with_batch_norm(module, step=k) for k in range(self.statistics_copies))
        return Network(module, self.objective, steps)

    def update_running_statistics(
        self, statistics: Params, steps: Callable[[str, int], tuple[int, ...]]
    ) -> None:
        """Apply the batch statistics a meta-gradient reported (`running.update`); `steps`
        places each forward pass at its φ_k where the statistics are kept per inner step."""
        per_step = steps if self.statistics_copies else None
        running.update(self.module, self.running, statistics, per_step)

    def stack_learner(self, checkpoint_inner: bool = False) -> StackLearner:
        return StackLearner(self, checkpoint_inner)


def normalisation_parameters(module: nn.Module) -> tuple[str, ...]:
    """The names of the parameters that belong to normalisation layers of `module` (after
    `exact_modules`: PyTorch's own layers are rewritten to these forms)."""
    owned = {
        id(p)
        for m in module.modules()
        if isinstance(m, NORMALISATION_LAYERS)
        for p in m.parameters(recurse=False)
    }
    return tuple(k for k, p in module.named_parameters() if id(p) in owned)


@dataclass(frozen=True)
class TaskLearner:
    """One task; `checkpoint_inner` recomputes each inner step in the backward pass; `fused`
    calls the network's fused-kernel module (never under `vmap`)."""

    network: Network
    checkpoint_inner: bool = False
    fused: bool = False
    forwards: list[Params] | None = field(default=None, compare=False)
    """The batch statistics of each forward pass so far, when recording."""
    at: list[int] = field(default_factory=lambda: [0], compare=False)
    """The k of the φ_k the inner loop has reached (set by `adapt`), for a network with running
    statistics per inner step."""

    def __call__(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        if self.forwards is None:
            return self._call(params, x)
        outputs, statistics = self._recorded(params, x)
        self.forwards.append(statistics)
        return outputs

    def statistics(self, phase: str) -> Params:
        """The batch statistics recorded so far, named as metrics (none unless recording)."""
        return running.named(phase, self.forwards or [])

    def _module(self) -> nn.Module:
        if steps := self.network.at_steps:
            return steps[min(self.at[0], len(steps) - 1)]
        return self.network.fused_module if self.fused else self.network.module

    def _call(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._module(), (params, self.network.buffers), (x,))

    def _recorded(self, params: Params, x: torch.Tensor) -> tuple[torch.Tensor, Params]:
        return running.record(self._module(), self.network.running, lambda: self._call(params, x))

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.network.objective.loss(outputs, y)

    def metrics(self, prefix: str, outputs: torch.Tensor, y: torch.Tensor) -> Metrics:
        with torch.no_grad():
            values = self.network.objective.metrics(outputs.detach(), y)
        return {f"{prefix}_{k}": v for k, v in values.items()}

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
        fixed = fixed or {}
        starting = iter(range(steps))
        reached = iter(range(steps + 1))

        def observed(fast: Params) -> dict[str, torch.Tensor]:
            self.at[0] = next(reached)
            full = {**fixed, **fast}
            seen = observe(full) if observe else {}
            if self.forwards is not None and next(starting, None) is not None:
                with torch.no_grad():  # the support forward pass of the step that starts here
                    self.forwards.append(self._recorded(full, x)[1])
            return seen

        # `fixed` travels as adapt()'s buffers, not in a closure: a recomputed step
        # differentiates only what it is passed.
        return adapt(
            lambda fast, buffers, inputs: self._call({**buffers, **fast}, inputs),
            params,
            fixed,
            x,
            y,
            loss_fn=lambda outputs, targets: self.loss(outputs, targets).sum(),
            steps=steps,
            optimizer=optimizer,
            first_order=first_order,
            observe=observed
            if observe or self.forwards is not None or self.network.at_steps
            else None,
            run_step=recomputed if self.checkpoint_inner else None,
        )

    def total(self, values: torch.Tensor) -> torch.Tensor:
        return values.sum()

    def cat(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return torch.cat([first, second])


@dataclass(frozen=True)
class StackLearner(TaskLearner):
    """A stack of T tasks: inputs `[T, n, ...]`, parameters `[T, ...]`, one loss per task.

    θ is given one view per task where it is used (`expand`: gradients flow back to θ), and the
    inner loop minimises the sum of the per-task losses, so each task's parameters receive
    only their own task's gradient.
    """

    def _call(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return self.network.module.forward_tasks(self._per_task(params, x.shape[0]), x)

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        objective = self.network.objective
        return (objective.loss if objective.stacks else torch.func.vmap(objective.loss))(outputs, y)

    def metrics(self, prefix: str, outputs: torch.Tensor, y: torch.Tensor) -> Metrics:
        objective = self.network.objective
        with torch.no_grad():
            per_task = objective.metrics if objective.stacks else torch.func.vmap(objective.metrics)
            values = per_task(outputs.detach(), y)
        return {f"{prefix}_{k}": v for k, v in values.items()}

    def adapt(self, params: Params, x: torch.Tensor, y: torch.Tensor, **kwargs) -> Adaptation:
        return super().adapt(self._per_task(params, x.shape[0]), x, y, **kwargs)

    def total(self, values: torch.Tensor) -> torch.Tensor:
        return values.flatten(1).sum(1)

    def cat(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return torch.cat([first, second], dim=1)

    def _per_task(self, params: Params, num_tasks: int) -> Params:
        """θ as one view per task; parameters that already have one copy per task as they are."""
        shapes = self.network.shapes
        return {
            k: p.expand(num_tasks, *p.shape) if p.shape == shapes[k] else p
            for k, p in params.items()
        }
