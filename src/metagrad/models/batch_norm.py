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
    """Within the block, `TaskBatchNorm` runs PyTorch's fused kernel (or, with `enabled=False`,
    primitive ops again).

    The fused kernel is faster and exact to second order on one task at a time, but not under
    `torch.func.vmap`. So primitive ops are the default, and only execution code that runs
    tasks one by one (the loop strategies) switches to the fused kernel.
    """
    token = _FUSED.set(enabled)
    try:
        yield
    finally:
        _FUSED.reset(token)


class TaskBatchNorm(nn.Module):
    """Batch normalisation with the statistics of the batch in hand (no running statistics),
    for inputs `[N, C, ...]` of any number of trailing dimensions.

    This is the MAML reference behaviour. By default it is written in primitive ops, which,
    unlike `F.batch_norm`, give exact second-order meta-gradients under `torch.func.vmap`: the
    fused kernel's batched backward treats the batch statistics as constants. Inside
    `fused_batch_norm()` it uses the fused kernel.
    """

    def __init__(self, num_features: int, eps: float = 1e-3, affine: bool = True):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _FUSED.get():
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
        return f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}"
