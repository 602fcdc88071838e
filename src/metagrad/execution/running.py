"""Batch-norm running statistics, updated as PyTorch updates them in training mode, as explicit
state.

A user's `nn.BatchNorm*d` with running statistics normalises with the batch in hand in training
mode and, on every forward pass, moves its buffers towards that batch's mean and unbiased
variance. Under `torch.func` a layer may not update a buffer in place, and under `vmap` the tasks
of a meta-batch run at once. So metagrad returns instead: each forward pass of a task reports its
layers' batch statistics (`record`), they come out of the meta-gradient with the task's metrics,
and `update` then applies them in the order a plain loop over the tasks would have run them
(task by task; within a task, the inner loop's forward passes, then the outer loss's). Momentum
updates are linear, so this gives PyTorch's numbers whatever the strategy.

MAML++'s BNRS keeps one set of running statistics per inner step instead (`per_step`): buffers
`[steps + 1, C]` whose row k is updated by the forward passes at φ_k, as the algorithm places
them (`Algorithm.forward_steps`), and read by the network at φ_k in evaluation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from metagrad.models.batch_norm import TaskBatchNorm
from metagrad.models.functional import Params

PREFIX = "running."
"""Metric names that carry batch statistics: `running.<phase>.<forward>.<layer>.<mean|var>`."""
PHASES = ("inner", "outer")
"""The parts of a task, in the order they run."""


def running_layers(module: nn.Module) -> tuple[str, ...]:
    """The names of the batch-norm layers of `module` that keep running statistics."""
    return tuple(
        name
        for name, layer in module.named_modules()
        if isinstance(layer, TaskBatchNorm) and getattr(layer, "running_mean", None) is not None
    )


def per_step(module: nn.Module, copies: int) -> None:
    """Give every batch-norm layer of `module` `copies` sets of running statistics (row k for
    the network at φ_k), in place: `running_mean`, `running_var` `[copies, C]` and
    `num_batches_tracked` `[copies]`, each row starting from the layer's own statistics where it
    keeps some (PyTorch's initial values otherwise)."""
    reference = next(module.parameters())
    like = {"dtype": reference.dtype, "device": reference.device}
    for layer in module.modules():
        if not isinstance(layer, TaskBatchNorm):
            continue
        mean = getattr(layer, "running_mean", None)
        if mean is None:
            mean = torch.zeros(layer.num_features, **like)
            var = torch.ones(layer.num_features, **like)
            tracked = torch.zeros((), dtype=torch.long, device=like["device"])
        else:
            var, tracked = layer.running_var, layer.num_batches_tracked
        for name, value in [("running_mean", mean), ("running_var", var)]:
            layer.register_buffer(name, value.detach().expand(copies, -1).clone())
        layer.register_buffer("num_batches_tracked", tracked.detach().expand(copies).clone())


def per_step_copies(module: nn.Module) -> int:
    """How many sets of running statistics per layer `module` keeps per inner step (0: one set
    per layer, or none)."""
    for layer in module.modules():
        mean = getattr(layer, "running_mean", None)
        if isinstance(layer, TaskBatchNorm) and mean is not None and mean.dim() == 2:
            return mean.shape[0]
    return 0


def record(
    module: nn.Module, layers: tuple[str, ...], call: Callable[[], torch.Tensor]
) -> tuple[torch.Tensor, Params]:
    """`call()` (a forward pass of `module`) and the mean and unbiased variance of the input of
    each of `layers`, detached, named `<layer>.mean` and `<layer>.var`."""
    found: Params = {}

    def hook(name: str) -> Callable:
        def statistics(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x = inputs[0].detach()
            dims = (0, *range(2, x.dim()))
            found[f"{name}.mean"] = x.mean(dims)
            found[f"{name}.var"] = x.var(dims, correction=1)

        return statistics

    handles = [module.get_submodule(name).register_forward_hook(hook(name)) for name in layers]
    try:
        return call(), found
    finally:
        for handle in handles:
            handle.remove()


def named(phase: str, forwards: list[Params]) -> Params:
    """The statistics of a task's forward passes in `phase`, as metrics."""
    return {
        f"{PREFIX}{phase}.{index:04d}.{k}": v
        for index, statistics in enumerate(forwards)
        for k, v in statistics.items()
    }


def split(metrics: Params) -> tuple[Params, Params]:
    """`(metrics, statistics)`: the batch statistics taken out of a meta-gradient's metrics."""
    statistics = {k: v for k, v in metrics.items() if k.startswith(PREFIX)}
    return {k: v for k, v in metrics.items() if k not in statistics}, statistics


def update(
    module: nn.Module,
    layers: tuple[str, ...],
    statistics: Params,
    steps: Callable[[str, int], tuple[int, ...]] | None = None,
) -> None:
    """Apply a meta-batch's batch statistics (`[tasks, channels]` each) to the running
    statistics of `module`'s `layers`, in place, as PyTorch's batch norm would have in a loop
    over the tasks: `r ← (1 − m)·r + m·s` per forward pass, or the cumulative average when the
    momentum is None; `num_batches_tracked` counts the forward passes.

    With statistics per inner step (`per_step`), `steps(phase, forwards)` gives the φ_k of each
    of a task's forward passes in `phase`, and each updates row k only."""
    order = sorted(statistics, key=lambda k: (PHASES.index(k.split(".")[1]), k))
    step_of = _steps_of(order, steps) if steps else dict.fromkeys(order)
    with torch.no_grad():
        for name in layers:
            layer = module.get_submodule(name)
            for row in sorted(set(step_of.values())):  # all None, or the steps
                count = 0
                tracked = (
                    layer.num_batches_tracked if row is None else layer.num_batches_tracked[row]
                )
                for stat in ("mean", "var"):
                    buffer = getattr(layer, f"running_{stat}")
                    buffer = buffer if row is None else buffer[row]
                    per_forward = [
                        statistics[k]
                        for k in order
                        if _layer_stat(k) == f"{name}.{stat}" and step_of[k] == row
                    ]
                    # [forwards, tasks, C] -> the loop's order: task by task, forward by forward
                    values = torch.stack(per_forward).transpose(0, 1).flatten(0, 1)
                    buffer.copy_(_moved(buffer, values, layer.momentum, tracked))
                    count = values.shape[0]
                tracked.add_(count)


def _steps_of(
    order: list[str], steps: Callable[[str, int], tuple[int, ...]]
) -> dict[str, int | None]:
    """The φ_k of each statistic's forward pass."""
    forwards = {
        phase: sorted({int(k.split(".")[2]) for k in order if k.split(".")[1] == phase})
        for phase in PHASES
    }
    at = {phase: steps(phase, len(indices)) for phase, indices in forwards.items()}
    return {k: at[k.split(".")[1]][int(k.split(".")[2])] for k in order}


def _layer_stat(key: str) -> str:
    """`<layer>.<mean|var>` of a statistics name."""
    return key.split(".", 3)[3]


def _moved(
    running: torch.Tensor, values: torch.Tensor, momentum: float | None, tracked: torch.Tensor
) -> torch.Tensor:
    """`running` after one update per row of `values`."""
    values = values.to(running.dtype)
    n = values.shape[0]
    if momentum is None:
        before = tracked.to(running.dtype)
        return (before * running + values.sum(0)) / (before + n)
    decay = (1 - momentum) ** torch.arange(n - 1, -1, -1, dtype=running.dtype)
    return (1 - momentum) ** n * running + momentum * (decay[:, None] * values).sum(0)
