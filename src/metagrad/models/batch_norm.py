"""Batch normalisation with the statistics of the task in hand, exact to second order."""

from __future__ import annotations

import copy
from itertools import chain

import torch
import torch.nn.functional as F
from torch import nn


class TaskBatchNorm(nn.Module):
    """Batch normalisation with the statistics of the batch in hand, for inputs `[N, C, ...]` of
    any number of trailing dimensions.

    This is the MAML reference behaviour. By default it is written in primitive ops, which,
    unlike `F.batch_norm`, give exact second-order meta-gradients under `torch.func.vmap`: the
    fused kernel's batched backward treats the batch statistics as constants. Two switches are
    set on copies of a network, never on the network itself (`with_batch_norm`): `fused` runs
    PyTorch's fused kernel instead (faster, and exact on one task at a time outside `vmap`);
    `running` normalises with the running statistics, as PyTorch's evaluation mode does, where
    the layer has them (a rewritten `nn.BatchNorm*d`, whose `momentum` it keeps). Running
    statistics kept per inner step (MAML++'s BNRS: `[steps, C]` buffers) are read at row `step`.
    """

    def __init__(self, num_features: int, eps: float = 1e-3, affine: bool = True):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum: float | None = 0.1
        self.fused = False
        self.running = False
        self.step = 0
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (x.dim() - 2)
        if self.running:
            mean, var = self.running_mean, self.running_var
            if mean.dim() == 2:  # one row per inner step
                mean, var = mean[self.step], var[self.step]
            mean = mean.reshape(shape)
            scale = torch.rsqrt(var.reshape(shape) + self.eps)
        elif self.fused:
            return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)
        else:
            dims = (0, *range(2, x.dim()))
            mean = x.mean(dim=dims, keepdim=True)
            scale = torch.rsqrt((x - mean).square().mean(dim=dims, keepdim=True) + self.eps)
        if self.weight is None:
            return (x - mean) * scale
        # per channel: the affine weight folds into the scale
        return (x - mean) * (scale * self.weight.reshape(shape)) + self.bias.reshape(shape)

    def extra_repr(self) -> str:
        switches = "".join(f", {k}=True" for k in ("fused", "running") if getattr(self, k))
        switches += f", step={self.step}" if self.step else ""
        return f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}{switches}"


def with_batch_norm(module: nn.Module, **switches: bool | int) -> nn.Module:
    """`module` itself if it has no `TaskBatchNorm`; otherwise a copy of its structure, sharing
    its parameters and buffers, whose `TaskBatchNorm` layers have `switches` set (`fused`,
    `running`, `step`).

    Execution code that runs tasks one at a time outside `vmap` (the loop strategies) calls a
    `fused=True` copy, everything else the module: the kernel is chosen by which module is
    called, never by a setting in the air.
    """
    layers = [m for m in module.modules() if isinstance(m, TaskBatchNorm)]
    if not layers:
        return module
    shared = {id(t): t for t in chain(module.parameters(), module.buffers())}
    variant = copy.deepcopy(module, memo=shared)
    for layer in variant.modules():
        if isinstance(layer, TaskBatchNorm):
            for name, value in switches.items():
                setattr(layer, name, value)
    return variant
