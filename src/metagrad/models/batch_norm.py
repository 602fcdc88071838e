"""Batch normalisation with the statistics of the task in hand, exact to second order."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

_FUSED = contextvars.ContextVar("fused_batch_norm", default=False)


@contextmanager
def fused_batch_norm(enabled: bool = True) -> Iterator[None]:
    """Within the block, `TaskBatchNorm2d` runs PyTorch's fused kernel (or, with `enabled=False`,
    primitive ops again).

    The fused kernel is faster and exact to second order on one task at a time, but not under
    `torch.func.vmap`. So primitive ops are the default, and only code that knows it runs tasks
    one by one (the loop strategies) switches to the fused kernel.
    """
    token = _FUSED.set(enabled)
    try:
        yield
    finally:
        _FUSED.reset(token)


class TaskBatchNorm2d(nn.Module):
    """Batch normalisation with the statistics of the batch in hand (no running statistics).

    This is the MAML reference behaviour. By default it is written in primitive ops, which,
    unlike `F.batch_norm`, give exact second-order meta-gradients under `torch.func.vmap`: the
    fused kernel's batched backward treats the batch statistics as constants. Inside
    `fused_batch_norm()` it uses the fused kernel.
    """

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _FUSED.get():
            return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = (x - mean).square().mean(dim=(0, 2, 3), keepdim=True)
        scale = self.weight[:, None, None] * torch.rsqrt(var + self.eps)
        return (x - mean) * scale + self.bias[:, None, None]
