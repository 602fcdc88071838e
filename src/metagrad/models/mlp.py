"""The fully connected network of the MAML paper's regression experiments."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Sequential):
    """`in_features → hidden… → out_features` with ReLU between layers (1-40-40-1 for sinusoid)."""

    def __init__(
        self, in_features: int = 1, hidden: Sequence[int] = (40, 40), out_features: int = 1
    ):
        widths = [in_features, *hidden]
        layers: list[nn.Module] = []
        for width_in, width_out in itertools.pairwise(widths):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], out_features))
        super().__init__(*layers)

    def forward_tasks(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The network with one copy of its parameters per task, as batched matrix products.

        Every parameter has a leading task dimension T and `x` is `[T, n, in_features]`. Task t
        sees only its own parameters, so the gradient of the summed task losses w.r.t. the
        stacked parameters is every task's own gradient, without `vmap`'s per-operation cost.
        """
        linears = [name for name, layer in self.named_children() if isinstance(layer, nn.Linear)]
        h = x
        for name in linears:
            weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]
            h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            if name != linears[-1]:
                h = F.relu(h)
        return h
