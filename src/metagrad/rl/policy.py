"""The Gaussian MLP policy of the MAML paper, as pure functions of a parameter dict.

The mean is an MLP of the observation (two hidden layers of 100 ReLU units in the paper); the
log standard deviation is one learned vector, independent of the state, and is adapted in the
inner loop like every other parameter (as in the original code and pytorch-maml-rl).

Every function also accepts parameters with a leading task dimension T (one adapted copy per
task) together with observations `[T, N, obs]`: task t then only sees its own copy, so the
summed loss of all tasks has each task's own gradient, without `vmap`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from metagrad.models.functional import Params

LOG_2PI = math.log(2 * math.pi)


class Gaussian(NamedTuple):
    """A diagonal Gaussian: `mean` `[..., A]`, `log_std` broadcastable to it."""

    mean: torch.Tensor
    log_std: torch.Tensor

    def detach(self) -> Gaussian:
        return Gaussian(self.mean.detach(), self.log_std.detach())


def init_policy(
    observation_size: int,
    action_size: int,
    hidden: Sequence[int] = (100, 100),
    *,
    init_std: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Params:
    """Initial parameters: PyTorch's `nn.Linear` initialisation (uniform in ±1/√fan_in), drawn
    from `generator` instead of the global RNG, and log σ = log `init_std`."""
    widths = [observation_size, *hidden, action_size]
    params: Params = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        bound = 1 / math.sqrt(fan_in)
        for name, shape in (("weight", (fan_out, fan_in)), ("bias", (fan_out,))):
            unit = torch.rand(shape, generator=generator, dtype=torch.float64)
            params[f"linear{i}.{name}"] = ((2 * unit - 1) * bound).to(dtype)
    params["log_std"] = torch.full((action_size,), math.log(init_std), dtype=dtype)
    return params


def policy(params: Params, observations: torch.Tensor) -> Gaussian:
    """The action distribution for `observations` `[..., N, obs]`: ReLU MLP mean, shared σ."""
    layers = sum(1 for name in params if name.endswith(".weight"))
    h = observations
    for i in range(layers):
        weight, bias = params[f"linear{i}.weight"], params[f"linear{i}.bias"]
        h = h @ weight.mT + bias.unsqueeze(-2)
        if i < layers - 1:
            h = F.relu(h)
    return Gaussian(h, params["log_std"].unsqueeze(-2))


def log_prob(dist: Gaussian, actions: torch.Tensor) -> torch.Tensor:
    """log π(a | s), summed over the action dimensions: `[..., N]`."""
    z = (actions - dist.mean) * torch.exp(-dist.log_std)
    return (-0.5 * z.square() - dist.log_std - 0.5 * LOG_2PI).sum(-1)


def kl_divergence(p: Gaussian, q: Gaussian) -> torch.Tensor:
    """KL(p ‖ q) per observation, summed over the action dimensions: `[..., N]`."""
    var_ratio = torch.exp(2 * (p.log_std - q.log_std))
    mahalanobis = (p.mean - q.mean).square() * torch.exp(-2 * q.log_std)
    return 0.5 * (var_ratio + mahalanobis - 1).sum(-1) + (q.log_std - p.log_std).sum(-1)


def sample(
    dist: Gaussian,
    generator: torch.Generator | None = None,
    part: slice = slice(None),
    tasks: int | None = None,
) -> torch.Tensor:
    """Actions drawn from `dist` with `generator` (never the global RNG). When `dist` holds the
    tasks `part` of a meta-batch of `tasks` (leading dimension), the noise is drawn for all
    `tasks` and `part` kept: each task's actions are those it gets in the whole meta-batch."""
    shape = dist.mean.shape if tasks is None else (tasks, *dist.mean.shape[1:])
    noise = torch.randn(shape, generator=generator, dtype=dist.mean.dtype, device=dist.mean.device)
    return dist.mean + torch.exp(dist.log_std) * noise[part]
