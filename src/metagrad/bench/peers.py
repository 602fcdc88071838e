"""The same meta-step written with other libraries, the way their own examples write it.

Each builder returns `step()`: one meta-gradient of the mean query loss over the meta-batch,
as a list in `model.parameters()` order. The model is metagrad's (same network, same
initialisation), so every peer's meta-gradient can be checked against metagrad's.
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from metagrad.algorithms.base import split_head
from metagrad.config import Config
from metagrad.errors import ConfigError
from metagrad.models.batch_norm import TaskBatchNorm
from metagrad.tasks.batch import TaskBatch

Step = Callable[[], list[torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


MODULES = {"parallel-metalearn": "metalearn", "parallel-metalearn/sequential": "metalearn"}
"""The package each peer imports as, where it is not the peer's name (the parallel-metalearn
distribution installs `metalearn`)."""


def installed(peer: str) -> bool:
    """Whether the library behind `peer` can be imported (it may already be, bare)."""
    module = MODULES.get(peer, peer)
    return module in sys.modules or importlib.util.find_spec(module) is not None


def _grads(model: nn.Module) -> list[torch.Tensor]:
    grads = [p.grad for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


def _import_learn2learn(module: str) -> types.ModuleType:
    """`learn2learn.algorithms.<module>` (maml, meta_sgd) without the package `__init__`.

    learn2learn's `__init__` imports its vision, gym and text modules (torchvision, gym); its
    algorithms need only `learn2learn.utils`, so the two packages are registered bare first.
    """
    if "learn2learn.algorithms" not in sys.modules:
        spec = importlib.util.find_spec("learn2learn")
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                "learn2learn is not installed; run benchmarks/install-peers.sh (learn2learn "
                "0.2.0 must be rebuilt with Cython 0.29 on Python 3.11)"
            )
        root = Path(next(iter(spec.submodule_search_locations)))
        for package_name, folder in (
            ("learn2learn", root),
            ("learn2learn.algorithms", root / "algorithms"),
        ):
            package = types.ModuleType(package_name)
            package.__path__ = [str(folder)]
            sys.modules[package_name] = package
    return importlib.import_module(f"learn2learn.algorithms.{module}")


def learn2learn_step(model: nn.Module, config: Config, batch: TaskBatch, loss_fn: LossFn) -> Step:
    """learn2learn 0.2.0: `MAML.clone()` (or `MetaSGD.clone()`) per task, `adapt()` per inner
    step, one backward a task; ANIL as its examples write it: the body on the task's inputs,
    `MAML` around the head alone."""
    algorithm = config.algorithm
    if algorithm.name == "anil":
        return _learn2learn_anil(model, config, batch, loss_fn)
    if algorithm.name == "metasgd":
        wrapped = _import_learn2learn("meta_sgd").MetaSGD(
            model, lr=algorithm.inner_lr, first_order=algorithm.first_order
        )
    else:
        _only_maml(config, "learn2learn")
        wrapped = _import_learn2learn("maml").MAML(
            model, lr=algorithm.inner_lr, first_order=algorithm.first_order
        )
    steps, tasks = algorithm.inner_steps, batch.num_tasks

    def step() -> list[torch.Tensor]:
        for x_s, y_s, x_q, y_q in zip(*batch.tensors(), strict=True):
            learner = wrapped.clone()
            for _ in range(steps):
                learner.adapt(loss_fn(learner(x_s), y_s))
            (loss_fn(learner(x_q), y_q) / tasks).backward()
        rates = [rate.grad for rate in getattr(wrapped, "lrs", [])]  # Meta-SGD's learned α
        for rate in getattr(wrapped, "lrs", []):
            rate.grad = None
        return _grads(model) + rates

    return step


def _learn2learn_anil(model: nn.Module, config: Config, batch: TaskBatch, loss_fn: LossFn) -> Step:
    algorithm = config.algorithm
    head_name = _head_module(model, algorithm.kwargs.get("head", "head."))
    head = _import_learn2learn("maml").MAML(
        model.get_submodule(head_name), lr=algorithm.inner_lr, first_order=algorithm.first_order
    )
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    body = copy.deepcopy(model, memo=shared)  # the same layers, the head replaced by identity
    parent, _, child = head_name.rpartition(".")
    setattr(body.get_submodule(parent), child, nn.Identity())
    steps, tasks = algorithm.inner_steps, batch.num_tasks

    def step() -> list[torch.Tensor]:
        for x_s, y_s, x_q, y_q in zip(*batch.tensors(), strict=True):
            learner = head.clone()
            features = body(x_s)
            for _ in range(steps):
                learner.adapt(loss_fn(learner(features), y_s))
            (loss_fn(learner(body(x_q)), y_q) / tasks).backward()
        return _grads(model)

    return step


def _head_module(model: nn.Module, prefix: str) -> str:
    """The name of the module ANIL adapts: the parameters `split_head` calls the head."""
    _, head = split_head(dict(model.named_parameters()), prefix)
    return next(iter(head)).rpartition(".")[0]


def _only_maml(config: Config, peer: str) -> None:
    if config.algorithm.name != "maml":
        raise ConfigError(
            f"the {peer} comparison writes MAML only, not algorithm {config.algorithm.name!r}"
            + ("; learn2learn writes anil and metasgd too" if peer != "learn2learn" else "")
        )


def higher_step(model: nn.Module, config: Config, batch: TaskBatch, loss_fn: LossFn) -> Step:
    """higher: `innerloop_ctx` per task; first order = untracked fast weights, gradients copied."""
    _only_maml(config, "higher")
    import higher

    first_order = config.algorithm.first_order
    inner = torch.optim.SGD(model.parameters(), lr=config.algorithm.inner_lr)
    steps, tasks = config.algorithm.inner_steps, batch.num_tasks

    def step() -> list[torch.Tensor]:
        for x_s, y_s, x_q, y_q in zip(*batch.tensors(), strict=True):
            with higher.innerloop_ctx(
                model, inner, copy_initial_weights=False, track_higher_grads=not first_order
            ) as (fmodel, diffopt):
                for _ in range(steps):
                    diffopt.step(loss_fn(fmodel(x_s), y_s))
                loss = loss_fn(fmodel(x_q), y_q) / tasks
                if not first_order:
                    loss.backward()
                    continue
                fast = list(fmodel.parameters())
                for param, grad in zip(
                    model.parameters(), torch.autograd.grad(loss, fast), strict=True
                ):
                    param.grad = grad if param.grad is None else param.grad + grad
        return _grads(model)

    return step


def torchopt_step(model: nn.Module, config: Config, batch: TaskBatch, loss_fn: LossFn) -> Step:
    """torchopt: `MetaSGD` with state extract/recover per task (its MAML example); first order
    with its functional `sgd` on detached gradients."""
    _only_maml(config, "torchopt")
    import torchopt

    lr, steps, tasks = config.algorithm.inner_lr, config.algorithm.inner_steps, batch.num_tasks
    if config.algorithm.first_order:
        optimizer = torchopt.sgd(lr)
        names = [name for name, _ in model.named_parameters()]

        def step() -> list[torch.Tensor]:
            for x_s, y_s, x_q, y_q in zip(*batch.tensors(), strict=True):
                params = tuple(model.parameters())
                state = optimizer.init(params)
                for _ in range(steps):
                    out = torch.func.functional_call(
                        model, dict(zip(names, params, strict=True)), (x_s,)
                    )
                    grads = torch.autograd.grad(loss_fn(out, y_s), params)
                    updates, state = optimizer.update(grads, state, inplace=False)
                    params = torchopt.apply_updates(params, updates, inplace=False)
                out = torch.func.functional_call(
                    model, dict(zip(names, params, strict=True)), (x_q,)
                )
                (loss_fn(out, y_q) / tasks).backward()
            return _grads(model)

        return step

    inner = torchopt.MetaSGD(model, lr=lr)
    model_state = torchopt.extract_state_dict(model)
    inner_state = torchopt.extract_state_dict(inner)

    def step() -> list[torch.Tensor]:
        for x_s, y_s, x_q, y_q in zip(*batch.tensors(), strict=True):
            for _ in range(steps):
                inner.step(loss_fn(model(x_s), y_s))
            (loss_fn(model(x_q), y_q) / tasks).backward()
            torchopt.recover_state_dict(model, model_state)
            torchopt.recover_state_dict(inner, inner_state)
        return _grads(model)

    return step


def parallel_metalearn_step(
    model: nn.Module, config: Config, batch: TaskBatch, loss_fn: LossFn, backend: str = "vmap"
) -> Step:
    """parallel-metalearn 0.5.6: its `MAML` around `MAML_Model(backbone, head)` with `InnerSGD`
    at a fixed rate, one `MAML.step()` a meta-batch. Inner gradients come from `torch.func.grad`;
    `backend="vmap"` maps the tasks with `vmap` in chunks of `train.chunk_size` (all tasks when
    unset), one backward a chunk; `"sequential"` runs them one by one, one backward a task.
    Batch norm is its `BatchNorm` (primitive ops, batch statistics, no running statistics, as
    its Conv-4 builds it) in place of metagrad's, on the same affine parameters."""
    _only_maml(config, "parallel-metalearn")
    from metalearn.algorithms import MAML
    from metalearn.inner_optimizers import InnerSGD
    from metalearn.loss import BaseLoss
    from metalearn.model_wrappers import MAML_Model

    class Loss(BaseLoss):  # the harness's loss on the network's output; the metric unused
        def forward(self, out_dict, targets, model_states=None, **kwargs):
            loss = loss_fn(out_dict["logits"], targets)
            return loss, loss.detach()

    algorithm, dtype = config.algorithm, batch.x_support.dtype
    wrapped = MAML_Model(
        backbone=_WithoutContext(_metalearn_batch_norm(model)), head=_WithoutContext(nn.Identity())
    )
    inner = InnerSGD(
        wrapped.get_fast_weights(),
        first_order=algorithm.first_order,
        inner_lr=algorithm.inner_lr,
        learn_lr=False,
    ).to(batch.x_support.device, dtype)
    with torch.no_grad():  # the rate is made in the default dtype: make it as exact as the model
        for rate in inner.parameters():
            rate.fill_(algorithm.inner_lr)
    learner = MAML(
        model=wrapped,
        optimizer=_KeepGradients(model.parameters()),
        inner_optimizer=inner,
        support_loss_fn=Loss(),
        inner_steps=algorithm.inner_steps,
        chunk_size=config.train.chunk_size or batch.num_tasks,
        device=batch.x_support.device,
        backend=backend,
    )
    tensors = batch.tensors()

    def step() -> list[torch.Tensor]:
        learner.step(iter([tensors]), training=True)
        return _grads(model)

    return step


class _WithoutContext(nn.Module):
    """`module(x)`, dropping the context (`training`, `num_step`) `MAML_Model` passes on."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, **context: object) -> torch.Tensor:
        return self.module(x)


class _KeepGradients(torch.optim.Optimizer):
    """The outer optimizer `MAML.step()` zeroes and steps: a step that leaves the parameters,
    and the meta-gradient in `.grad`, as they are."""

    def __init__(self, params):
        super().__init__(params, {})

    def step(self, closure=None):
        return None


def _metalearn_batch_norm(model: nn.Module) -> nn.Module:
    """`model`'s layers (shared, not copied) with parallel-metalearn's `BatchNorm` in place of
    each `TaskBatchNorm`, on the same affine parameters and eps."""
    layers = [name for name, m in model.named_modules() if isinstance(m, TaskBatchNorm)]
    if not layers:
        return model
    from metalearn.nn_models.basic_layers import BatchNorm

    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    variant = copy.deepcopy(model, memo=shared)
    for name in layers:
        layer = model.get_submodule(name)
        affine = layer.weight is not None
        norm = BatchNorm(
            layer.num_features, eps=layer.eps, affine=affine, track_running_stats=False
        )
        if affine:
            norm.weight, norm.bias = layer.weight, layer.bias
        parent, _, child = name.rpartition(".")
        setattr(variant.get_submodule(parent), child, norm)
    return variant


PEERS: dict[str, Callable[[nn.Module, Config, TaskBatch, LossFn], Step]] = {
    "learn2learn": learn2learn_step,
    "higher": higher_step,
    "torchopt": torchopt_step,
    "parallel-metalearn": parallel_metalearn_step,
    "parallel-metalearn/sequential": functools.partial(
        parallel_metalearn_step, backend="sequential"
    ),
}
