"""`MetaLearner`: an algorithm, a network and their execution plan, as a training loop uses them."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from metagrad.algorithms.base import Algorithm, MetaParameters, Metrics
from metagrad.errors import CheckpointError
from metagrad.execution import distributed, running
from metagrad.execution.network import Network
from metagrad.execution.plan import ExecutionPlan, Report, choose_plan, meta_gradient
from metagrad.models.exact import exact_modules
from metagrad.objectives import Objective
from metagrad.tasks.batch import TaskBatch


class MetaLearner:
    """Meta-learns `model`'s initialisation (and the algorithm's own meta-parameters).

    ```python
    learner = MetaLearner(MAML(inner_lr=0.01), model, CLASSIFICATION)
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)
    for step in range(1000):
        optimizer.zero_grad()
        metrics = learner.backward(tasks.sample("train", step, 32))
        optimizer.step()
    ```

    `model` is any `nn.Module`; its normalisation layers are rewritten in place to exact forms
    and dropout is refused (`metagrad.models.exact`). Batch norm normalises with the batch in
    hand; running statistics, where a layer keeps them (or per inner step, where the algorithm
    asks: MAML++'s BNRS), are updated by every meta-gradient as a training loop over the tasks
    would update them (`metagrad.execution.running`).

    `plan` is how meta-steps are executed (`ExecutionPlan`, or a strategy name); with `auto`,
    the fastest is measured at the first meta-batch and kept.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        model: nn.Module,
        objective: Objective,
        plan: ExecutionPlan | str = "auto",
        *,
        report: Report = print,
    ):
        self.network = Network(exact_modules(model), objective)
        self.algorithm = algorithm.for_network(self.network.normalisation)
        if copies := self.algorithm.statistics_steps():
            running.per_step(self.network.module, copies)
            self.network = Network(self.network.module, objective)
        network_params = dict(model.named_parameters())
        extra = {
            k: nn.Parameter(v.detach().clone())
            for k, v in self.algorithm.extra_parameters(network_params).items()
        }
        self.meta = MetaParameters(network_params, extra)
        self.plan = ExecutionPlan(plan) if isinstance(plan, str) else plan
        self.report = report

    @property
    def model(self) -> nn.Module:
        return self.network.module

    def parameters(self) -> list[torch.Tensor]:
        """Every meta-parameter, for the outer optimizer: the network's, then the algorithm's."""
        return list(self.meta.named().values())

    def choose_plan(self, batch: TaskBatch, choose: Callable | None = None) -> ExecutionPlan:
        """Settle the execution plan on `batch` (measured if `auto`; `choose` may replace the
        probe, e.g. a memory planner); later calls keep it."""
        if self.plan.strategy == "auto":
            choose = choose or (lambda *args: choose_plan(*args, self.plan, report=self.report))
            self.plan = choose(self.algorithm, self.network, self.meta, batch)
        return self.plan

    def meta_gradient(self, batch: TaskBatch) -> tuple[MetaParameters, Metrics]:
        """The meta-gradient for one meta-batch and its per-task metrics. Like a training-mode
        forward pass in PyTorch, it updates the batch-norm running statistics, if any.

        Under `torchrun`, every process passes the same meta-batch and computes the part of it
        that is its own (`metagrad.execution.distributed`); each gets the whole meta-gradient
        and every task's metrics."""
        world = distributed.world()
        local = world.local(batch)
        plan = self.choose_plan(local)
        grads, metrics = meta_gradient(self.algorithm, self.network, self.meta, local, plan)
        if world.size > 1:
            combined, metrics = world.combine(
                list(grads.named().values()), metrics, batch.num_tasks
            )
            flat = iter(combined)
            grads = MetaParameters(*({k: next(flat) for k in part} for part in grads))
        metrics, statistics = running.split(metrics)
        if statistics:
            self.network.update_running_statistics(statistics, self.algorithm.forward_steps)
        return grads, metrics

    def backward(self, batch: TaskBatch) -> Metrics:
        """Set every meta-parameter's `.grad` to the meta-gradient of `batch` (as
        `loss.backward()` would, accumulating); return the per-task metrics."""
        grads, metrics = self.meta_gradient(batch)
        for param, grad in zip(self.parameters(), grads.named().values(), strict=True):
            param.grad = grad if param.grad is None else param.grad + grad
        return metrics

    def state_dict(self) -> dict:
        """The network's state, the algorithm's meta-parameters and the execution plan."""
        return {
            "model": self.model.state_dict(),
            "extra": {k: v.detach() for k, v in self.meta.extra.items()},
            "execution": self.plan.to_dict(),
        }

    def load_state_dict(self, state: dict, *, plan: bool = True) -> None:
        """Load `state_dict()` output; `plan=False` keeps this learner's own plan."""
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:  # the config matched, so the model's code has changed
            details = str(err).split(":", 1)[-1].strip().replace("\n\t", " ")
            raise CheckpointError(
                f"the checkpoint does not fit the model built from this config ({details}); "
                "the model's code changed since the checkpoint was saved: restore that code, "
                "or start a new run"
            ) from err
        with torch.no_grad():
            for name, value in state.get("extra", {}).items():
                self.meta.extra[name].copy_(value)
        if plan:
            self.plan = ExecutionPlan(**state["execution"])
