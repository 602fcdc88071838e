"""Making any `nn.Module` safe to meta-learn: normalisation layers rewritten to exact forms.

A user's network brings PyTorch's own normalisation layers, and two things go wrong with them
in meta-learning:

- `nn.BatchNorm*d` with running statistics updates its buffers in place on every forward pass,
  which `torch.func` refuses ("mutate a captured Tensor") in every strategy;
- the fused kernels behind batch, instance, group and layer normalisation give wrong
  second-order gradients under `torch.func.vmap` (their batched backward treats the batch
  statistics as constants): a silently wrong meta-gradient.

`exact_modules` replaces each such layer, in place, by the same computation in primitive ops,
exact under every execution strategy. Parameter and buffer names are kept, so state dicts load
both ways. Batch normalisation uses the statistics of the task in hand, in training and in
evaluation (the MAML reference); a layer's running statistics stay in its state dict, and
meta-training updates them as PyTorch's training mode would (`metagrad.execution.running`).
Layers whose output is random (dropout) are refused: a meta-gradient that depends on random
draws cannot be checked, reproduced or resumed.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from metagrad.errors import ConfigError
from metagrad.models.batch_norm import TaskBatchNorm

RANDOM_LAYERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
PYTORCH_NORMALISATION = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)
"""The layers `exact_modules` rewrites."""


def check_exact(model: nn.Module) -> None:
    """Refuse a network whose PyTorch normalisation layers were not rewritten: under `vmap`
    their meta-gradient would be silently wrong."""
    for name, module in model.named_modules():
        if name and isinstance(module, PYTORCH_NORMALISATION):
            raise ConfigError(
                f"model layer {name!r} is PyTorch's own {type(module).__name__}, whose "
                "second-order gradient under vmap is wrong (and whose running statistics update "
                "in place); pass the model through metagrad.models.exact_modules first "
                "(MetaLearner and the command line do)"
            )


class ExactGroupNorm(nn.Module):
    """`nn.GroupNorm` in primitive ops (also stands for `nn.InstanceNorm*d`: one group per
    channel)."""

    def __init__(self, num_groups: int, eps: float, weight, bias):
        super().__init__()
        self.num_groups, self.eps = num_groups, eps
        self.weight, self.bias = weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = x.reshape(x.shape[0], self.num_groups, -1)
        mean = groups.mean(-1, keepdim=True)
        var = (groups - mean).square().mean(-1, keepdim=True)
        x = ((groups - mean) * torch.rsqrt(var + self.eps)).reshape(x.shape)
        if self.weight is None:
            return x
        shape = (-1,) + (1,) * (x.dim() - 2)
        return x * self.weight.reshape(shape) + self.bias.reshape(shape)


class ExactLayerNorm(nn.Module):
    """`nn.LayerNorm` in primitive ops."""

    def __init__(self, normalized_shape: tuple[int, ...], eps: float, weight, bias):
        super().__init__()
        self.dims = tuple(range(-len(normalized_shape), 0))
        self.eps = eps
        self.weight, self.bias = weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(self.dims, keepdim=True)
        var = (x - mean).square().mean(self.dims, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            x = x * self.weight
        return x + self.bias if self.bias is not None else x


def exact_modules(model: nn.Module, *, warn: bool = True) -> nn.Module:
    """Rewrite `model`'s normalisation layers in place to exact forms; refuse random layers.

    Returns `model`. Raises `ConfigError` naming a dropout layer with p > 0.
    """
    for name, module in list(model.named_modules()):
        if isinstance(module, RANDOM_LAYERS) and module.p > 0:
            raise ConfigError(
                f"model layer {name!r} ({module}) drops activations at random, so a task's "
                "meta-gradient would depend on random draws: it could not be checked against "
                "another strategy or reproduced on resume. Set its p to 0 or remove it"
            )
        replacement = _exact(module) if name else None  # the root itself is the user's to keep
        if replacement is None:
            continue
        _copy_buffers(module, replacement)
        _set_submodule(model, name, replacement)
        if warn and getattr(module, "track_running_stats", False):
            warnings.warn(
                f"model layer {name!r} ({type(module).__name__}) normalises with the "
                "statistics of the task in hand (the MAML reference); its running statistics "
                "are updated by meta-training as in PyTorch's training mode, and evaluation "
                "uses them only with eval.batch_norm: running",
                stacklevel=2,
            )
    return model


def _exact(module: nn.Module) -> nn.Module | None:
    """The exact replacement of a normalisation layer, sharing its parameters; None if none
    is needed."""
    if isinstance(module, _BatchNorm):
        exact = TaskBatchNorm(module.num_features, eps=module.eps, affine=False)
        exact.weight, exact.bias, exact.momentum = module.weight, module.bias, module.momentum
        return exact
    if isinstance(module, _InstanceNorm):
        if module.track_running_stats:
            raise ConfigError(
                f"model layer {module} keeps running statistics, which metagrad does not "
                "update for instance normalisation; build it with track_running_stats=False "
                "(PyTorch's default)"
            )
        return ExactGroupNorm(module.num_features, module.eps, module.weight, module.bias)
    if isinstance(module, nn.GroupNorm):
        return ExactGroupNorm(module.num_groups, module.eps, module.weight, module.bias)
    if isinstance(module, nn.LayerNorm):
        shape = tuple(module.normalized_shape)
        return ExactLayerNorm(shape, module.eps, module.weight, module.bias)
    return None


def _copy_buffers(source: nn.Module, target: nn.Module) -> None:
    for name, buffer in source.named_buffers(recurse=False):
        target.register_buffer(name, buffer)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, module)
