"""The PPO-clip outer step (Schulman et al. 2017) as ProMP uses it for meta-RL (Rothfuss et al.
2019, "ProMP: Proximal Meta-Policy Search").

Where TRPO takes one constrained step, PPO takes `epochs` Adam steps on the clipped surrogate
of the same episodes, −mean min(r·A, clip(r, 1 − ε, 1 + ε)·A) with r = π_new / π_old: the clip
removes the incentive to move a ratio beyond 1 ± ε, which keeps the new policy near the one that
sampled the episodes without a second-order solve. The Adam moments carry over from one
meta-iteration to the next (ProMP keeps one optimiser for the whole run), so they are part of
a run's checkpoint. ProMP's settings are the defaults: ε = 0.3, 5 steps, learning rate 10⁻³.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from metagrad.errors import NonFiniteError
from metagrad.models.functional import Params
from metagrad.rl.trpo import LossAndKL, OuterStep, flatten, unflatten


@dataclass(frozen=True)
class PPO:
    clip: float = 0.3
    """ε: ratios beyond 1 ± ε earn nothing more."""
    epochs: int = 5
    """Adam steps on the same episodes per meta-iteration."""
    lr: float = 1e-3
    """Adam's learning rate."""


def ppo_step(
    params: Params,
    loss_and_kl: LossAndKL,
    config: PPO = PPO(),
    state: dict | None = None,
    combine: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> OuterStep:
    """`config.epochs` Adam steps of `params` on `loss_and_kl` (the clipped surrogate), from
    Adam's `state` of the previous meta-iteration (None: fresh moments). `combine`, as in
    `trpo_step`, turns this part of the tasks' loss, KL and gradient into the whole's."""
    whole = combine or (lambda value: value)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    tensors = list(leaves.values())
    optimizer = torch.optim.Adam(tensors, lr=config.lr)
    if state is not None:
        optimizer.load_state_dict(state)
    loss_before = gradient_norm = 0.0
    for epoch in range(config.epochs):
        loss, _ = loss_and_kl(leaves, True)
        gradient = whole(flatten(torch.autograd.grad(loss, tensors)))
        loss = whole(loss.detach())
        if not (torch.isfinite(loss) and torch.isfinite(gradient).all()):
            raise NonFiniteError(
                f"the PPO surrogate loss ({loss.item():g}) or its gradient is not finite at "
                f"step {epoch + 1} of {config.epochs}; the policy was left unchanged. Check the "
                "rewards and observations for NaN or inf, or lower rl.ppo_lr"
            )
        if epoch == 0:
            loss_before, gradient_norm = loss.item(), gradient.norm().item()
        for tensor, grad in zip(tensors, unflatten(gradient, leaves).values(), strict=True):
            tensor.grad = grad
        optimizer.step()
    with torch.no_grad():
        loss_after, kl = whole(torch.stack(loss_and_kl(leaves, False))).tolist()
    new_params = {k: v.detach() for k, v in leaves.items()}
    return OuterStep(
        new_params, loss_before, loss_after, kl, 1.0, gradient_norm, optimizer.state_dict()
    )
