"""Returns, advantages and the linear feature baseline, for padded batches of episodes.

Time is the last dimension of rewards and masks, `[..., H]` (observations `[..., H, obs]`);
`mask` is 1 where the step was taken and 0 after the episode ended. An episode cut by the
horizon is treated as ended (no bootstrap), as rllab and pytorch-maml-rl do.
"""

from __future__ import annotations

import torch

from metagrad.errors import NonFiniteError


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """R_t = Σ_{k ≥ t} γ^{k−t} r_k within the episode, 0 after it ended."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = (rewards[..., t] + gamma * running) * mask[..., t]
        returns[..., t] = running
    return returns


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float,
    gae_lambda: float,
) -> torch.Tensor:
    """Generalised advantage estimation (Schulman et al. 2016).

    δ_t = r_t + γ·m_{t+1}·V_{t+1} − V_t and A_t = δ_t + γλ·m_{t+1}·A_{t+1}, 0 where m_t = 0; with
    λ = 1 it is the discounted return minus the baseline.
    """
    horizon = rewards.shape[-1]
    values = values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    next_value = torch.zeros_like(rewards[..., 0])
    for t in range(horizon - 1, -1, -1):
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        running = (delta + gamma * gae_lambda * running) * mask[..., t]
        advantages[..., t] = running
        next_value = values[..., t]
    return advantages


def baseline_features(observations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[o, o², t, t², t³, 1] with t = step / 100, 0 where masked (Duan et al. 2016):
    `[..., H, F]`."""
    horizon = mask.shape[-1]
    time = torch.arange(horizon, dtype=observations.dtype) / 100.0
    time = time.expand_as(mask).unsqueeze(-1)
    features = torch.cat(
        [observations, observations.square(), time, time**2, time**3, torch.ones_like(time)], -1
    )
    return features * mask.unsqueeze(-1)


def fit_linear_baseline(
    observations: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    reg_coeff: float = 1e-5,
    retries: int = 5,
) -> torch.Tensor:
    """Per-task weights `[T, F]` of the ridge regression of the returns on the features.

    Inputs are `[T, R, H, …]`: each task's R episodes make one regression. It solves
    (XᵀX + c·I) w = Xᵀy, multiplying c by 10 for a task whose solution is not finite, up to
    `retries` times (pytorch-maml-rl's LinearFeatureBaseline). Solved in float64: XᵀX sums
    thousands of rows of t³-sized features.
    """
    features = baseline_features(observations, mask).double()
    tasks, size = features.shape[0], features.shape[-1]
    x = features.reshape(tasks, -1, size)
    y = (returns * mask).double().reshape(tasks, -1, 1)
    gram, moment = x.mT @ x, x.mT @ y
    eye = torch.eye(size, dtype=torch.float64)
    reg = torch.full((tasks, 1, 1), reg_coeff, dtype=torch.float64)
    weights = torch.linalg.lstsq(gram + reg * eye, moment).solution
    for _ in range(retries):
        bad = ~torch.isfinite(weights).all(dim=(1, 2))
        if not bad.any():
            break
        reg[bad] *= 10
        weights[bad] = torch.linalg.lstsq(gram[bad] + reg[bad] * eye, moment[bad]).solution
    if not torch.isfinite(weights).all():
        raise NonFiniteError(
            "the linear baseline's normal equations have no finite solution even with "
            f"regularisation {reg.max().item():g}; check the observations for NaN or inf"
        )
    return weights.squeeze(-1).to(observations.dtype)


def linear_baseline(
    observations: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, **fit_kwargs
) -> torch.Tensor:
    """The baseline fitted to each task's episodes, evaluated on them: `[T, R, H]`."""
    weights = fit_linear_baseline(observations, returns, mask, **fit_kwargs)
    features = baseline_features(observations, mask)
    return torch.einsum("trhf,tf->trh", features, weights)


def normalise(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit (population) standard deviation over each task's valid steps."""
    dims = tuple(range(1, values.dim()))
    count = mask.sum(dims, keepdim=True)
    mean = (values * mask).sum(dims, keepdim=True) / count
    std = (((values - mean) * mask).square().sum(dims, keepdim=True) / count).sqrt()
    return (values - mean) / (std + eps) * mask


def advantages(
    observations: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 0.99,
    gae_lambda: float = 1.0,
    normalised: bool = True,
) -> torch.Tensor:
    """Per-task GAE advantages against the linear baseline fitted to the discounted returns."""
    returns = discounted_returns(rewards, mask, gamma)
    values = linear_baseline(observations, returns, mask)
    adv = gae(rewards, values, mask, gamma=gamma, gae_lambda=gae_lambda)
    return normalise(adv, mask) if normalised else adv
