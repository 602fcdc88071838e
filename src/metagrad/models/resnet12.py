"""ResNet-12, the residual backbone of MetaOptNet (Lee et al., 2019) and later few-shot work."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from metagrad.models.batch_norm import TaskBatchNorm

_SLOPE = 0.1
_POOLS = 4


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="leaky_relu", a=_SLOPE)
    return [conv, TaskBatchNorm(out_channels)]


class ResidualBlock(nn.Module):
    """3 × (3×3 conv, BatchNorm) with LeakyReLU(0.1) between them, plus a 1×1 conv + BatchNorm
    shortcut; LeakyReLU after the sum, then 2×2 max-pooling (as MetaOptNet's ``BasicBlock``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(in_channels, out_channels, 3),
            nn.LeakyReLU(_SLOPE),
            *_conv_bn(out_channels, out_channels, 3),
            nn.LeakyReLU(_SLOPE),
            *_conv_bn(out_channels, out_channels, 3),
        )
        self.shortcut = nn.Sequential(*_conv_bn(in_channels, out_channels, 1))
        self.activation = nn.LeakyReLU(_SLOPE)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.activation(self.body(x) + self.shortcut(x)))


class ResNet12(nn.Module):
    """4 residual blocks (64-160-320-640 channels by default), global average pooling and a
    linear head (none when `num_classes` is 0: an embedding): 12 convolutions on the main
    path, ~12.4M parameters before the head.

    Batch normalisation is `TaskBatchNorm`: the statistics of the batch in hand, no running
    statistics, exact under `torch.func.vmap`. There is no DropBlock (MetaOptNet's
    regulariser), which keeps the forward pass deterministic and a pure function of the
    parameters, as the meta-gradient needs. Each block halves the image, so ``image_size``
    must be at least 16.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        channels: Sequence[int] = (64, 160, 320, 640),
    ):
        super().__init__()
        if len(channels) != _POOLS:
            raise ValueError(f"ResNet12 has 4 blocks, so give 4 channel widths, got {channels}.")
        if image_size < 2**_POOLS:
            raise ValueError(
                f"ResNet12 halves the image in each of its 4 blocks, so image_size must be at "
                f"least 16, got {image_size}."
            )
        widths = itertools.pairwise([in_channels, *channels])
        self.features = nn.Sequential(*(ResidualBlock(cin, cout) for cin, cout in widths))
        self.head = nn.Linear(channels[-1], num_classes) if num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=(2, 3))
        return h if self.head is None else self.head(h)
