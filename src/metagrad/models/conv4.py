"""The four-block convolutional network of the few-shot literature (Vinyals et al.; MAML)."""

from __future__ import annotations

import torch
from torch import nn


class TaskBatchNorm2d(nn.Module):
    """Batch normalisation with the statistics of the batch in hand, written in primitive ops.

    This is the MAML reference behaviour (no running statistics). Primitive ops, unlike
    `F.batch_norm`, give exact second-order meta-gradients under `torch.func.vmap`: the fused
    kernel's batched backward treats the batch statistics as constants.
    """

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = (x - mean).square().mean(dim=(0, 2, 3), keepdim=True)
        scale = self.weight[:, None, None] * torch.rsqrt(var + self.eps)
        return (x - mean) * scale + self.bias[:, None, None]


class Conv4(nn.Module):
    """4 × [3×3 conv, BatchNorm, ReLU, 2× down-sampling] + linear head.

    `pool="stride"`: stride-2 convolutions and a spatial mean before the head (the MAML
    Omniglot network, 64 filters); `pool="max"`: 2×2 max-pooling and a flattened feature map
    (the mini-ImageNet network, 32 filters at 84×84).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        hidden: int = 64,
        pool: str = "stride",
    ):
        super().__init__()
        blocks: list[nn.Module] = []
        size = image_size
        for index in range(4):
            stride = 2 if pool == "stride" else 1
            blocks += [
                nn.Conv2d(in_channels if index == 0 else hidden, hidden, 3, stride, padding=1),
                TaskBatchNorm2d(hidden),
                nn.ReLU(),
            ]
            if pool == "max":
                blocks.append(nn.MaxPool2d(2))
                size //= 2
            else:
                size = (size + 1) // 2
        self.features = nn.Sequential(*blocks)
        self.pool = pool
        features = hidden if pool == "stride" else hidden * size * size
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        h = h.mean(dim=(2, 3)) if self.pool == "stride" else h.flatten(1)
        return self.head(h)
