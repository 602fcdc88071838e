"""The four-block convolutional network of the few-shot literature (Vinyals et al.; MAML)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metagrad.models.batch_norm import TaskBatchNorm


class Conv4(nn.Module):
    """4 × [3×3 conv, BatchNorm, ReLU, 2× down-sampling] + linear head (none when
    `num_classes` is 0: the network is then an embedding, as Prototypical Networks use it).

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
                TaskBatchNorm(hidden),
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
        self.head = nn.Linear(features, num_classes) if num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        h = h.mean(dim=(2, 3)) if self.pool == "stride" else h.flatten(1)
        return h if self.head is None else self.head(h)

    def forward_tasks(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The network with one copy of its parameters per task, as grouped convolutions.

        Every parameter has a leading task dimension T and `x` is `[T, n, C, H, W]`. The tasks
        become channel groups (`[n, T·C, H, W]`, `groups=T`), so the fused batch norm's
        per-channel statistics are each task's own, and exact to second order (no `vmap`).
        """
        tasks = x.shape[0]
        h = x.transpose(0, 1).flatten(1, 2)
        for name, layer in self.features.named_children():
            prefix = f"features.{name}."
            if isinstance(layer, nn.Conv2d):
                h = F.conv2d(
                    h,
                    params[prefix + "weight"].flatten(0, 1),
                    params[prefix + "bias"].flatten(),
                    stride=layer.stride,
                    padding=layer.padding,
                    groups=tasks,
                )
            elif isinstance(layer, TaskBatchNorm):
                weight, bias = params[prefix + "weight"], params[prefix + "bias"]
                h = F.batch_norm(
                    h, None, None, weight.flatten(), bias.flatten(), training=True, eps=layer.eps
                )
            elif isinstance(layer, nn.MaxPool2d):
                h = F.max_pool2d(h, layer.kernel_size, layer.stride, layer.padding)
            elif isinstance(layer, nn.ReLU):
                h = F.relu(h)
            else:
                raise TypeError(f"forward_tasks has no task-batched form of {layer}")
        h = h.mean(dim=(2, 3)) if self.pool == "stride" else h
        h = h.reshape(h.shape[0], tasks, -1).transpose(0, 1)  # [T, n, features]
        if self.head is None:
            return h
        weight, bias = params["head.weight"], params["head.bias"]
        return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
