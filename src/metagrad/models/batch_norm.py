"""Batch normalisation with the statistics of the task in hand, exact to second order."""

from __future__ import annotations

import copy
from itertools import chain

import torch
import torch.nn.functional as F
from torch import nn


class TaskBatchNorm(nn.Module):
    """Batch normalisation with the statistics of the batch in hand (no running statistics),
    for inputs `[N, C, ...]` of any number of trailing dimensions.

    This is the MAML reference behaviour. By default it is written in primitive ops, which,
    unlike `F.batch_norm`, give exact second-order meta-gradients under `torch.func.vmap`: the
    fused kernel's batched backward treats the batch statistics as constants. With `fused` set it
    runs PyTorch's fused kernel instead: faster, and exact on one task at a time outside `vmap` (see
    `with_fused_batch_norm`).
    """

    def __init__(self, num_features: int, eps: float = 1e-3, affine: bool = True):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.fused = False
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)
        dims = (0, *range(2, x.dim()))
        shape = (-1,) + (1,) * (x.dim() - 2)
        mean = x.mean(dim=dims, keepdim=True)
        var = (x - mean).square().mean(dim=dims, keepdim=True)
        scale = torch.rsqrt(var + self.eps)  # per channel: the affine weight folds into it
        if self.weight is None:
            return (x - mean) * scale
        return (x - mean) * (scale * self.weight.reshape(shape)) + self.bias.reshape(shape)

    def extra_repr(self) -> str:
        fused = ", fused=True" if self.fused else ""
        return f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}{fused}"


def with_fused_batch_norm(module: nn.Module) -> nn.Module:
    """`module` itself if it has no `TaskBatchNorm`; otherwise a copy of its structure, sharing
    its parameters and buffers, whose `TaskBatchNorm` layers run PyTorch's fused kernel.

    Execution code that runs tasks one at a time outside `vmap` (the loop strategies) calls the
    copy, everything else the module: the kernel is chosen by which module is called, never by
    a setting in the air.
    """
    layers = [m for m in module.modules() if isinstance(m, TaskBatchNorm)]
    if not layers:
        return module
    shared = {id(t): t for t in chain(module.parameters(), module.buffers())}
    fused = copy.deepcopy(module, memo=shared)
    for layer in fused.modules():
        if isinstance(layer, TaskBatchNorm):
            layer.fused = True
    return fused
