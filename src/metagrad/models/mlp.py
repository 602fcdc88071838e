"""The fully connected network of the MAML paper's regression experiments."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

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
