"""The TRPO update (Schulman et al. 2015) for any differentiable surrogate and KL.

The step direction solves F s = g by conjugate gradient, with Fisher-vector products taken as
Hessian-vector products of the mean KL (double backpropagation, exact; the MAML paper used
finite differences to avoid third derivatives). It is scaled so that ½ sᵀF s = max_kl, then a
backtracking line search accepts the first fraction that lowers the surrogate loss while
keeping the KL within max_kl, or keeps the parameters when none does.

Defaults are those of rllab's ConjugateGradientOptimizer, which the original MAML code used,
and of pytorch-maml-rl's navigation configuration: damping 1e-5, backtracking ratio 0.8,
15 backtracking steps, 10 CG iterations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from metagrad.errors import NonFiniteError
from metagrad.models.functional import Params

MatVec = Callable[[torch.Tensor], torch.Tensor]
LossAndKL = Callable[[Params, bool], tuple[torch.Tensor, torch.Tensor]]
"""`loss_and_kl(params, differentiable) -> (surrogate loss, mean KL(old ‖ new))`: with
`differentiable` False it is only evaluated (the line search) and may skip building a graph."""


def flatten(tensors: Params | list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    values = tensors.values() if isinstance(tensors, dict) else tensors
    return torch.cat([t.reshape(-1) for t in values])


def unflatten(vector: torch.Tensor, like: Params) -> Params:
    out, offset = {}, 0
    for name, tensor in like.items():
        out[name] = vector[offset : offset + tensor.numel()].view_as(tensor)
        offset += tensor.numel()
    return out


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    iterations: int = 10,
    tolerance: float = 1e-10,
) -> torch.Tensor:
    """An approximate solution of A x = b for symmetric positive-definite A given as `matvec`,
    from x = 0; stops early once the squared residual is below `tolerance`."""
    x = torch.zeros_like(b)
    residual = b.clone()
    direction = b.clone()
    rr = residual @ residual
    for _ in range(iterations):
        if rr < tolerance:
            break
        product = matvec(direction)
        alpha = rr / (direction @ product)
        x = x + alpha * direction
        residual = residual - alpha * product
        rr_new = residual @ residual
        direction = residual + (rr_new / rr) * direction
        rr = rr_new
    return x


class LineSearch(NamedTuple):
    params: torch.Tensor
    """The accepted flat parameters (the initial ones when nothing was accepted)."""
    fraction: float
    """The accepted fraction of the full step; 0 when nothing was accepted."""
    loss: float
    kl: float


def line_search(
    evaluate: Callable[[torch.Tensor], tuple[float, float]],
    start: torch.Tensor,
    full_step: torch.Tensor,
    loss_before: float,
    *,
    max_kl: float,
    ratio: float = 0.8,
    steps: int = 15,
) -> LineSearch:
    """Try start − ratio^k · full_step for k = 0, 1, …, steps − 1; accept the first whose
    `evaluate` gives a loss below `loss_before` and a KL of at most `max_kl`."""
    fraction = 1.0
    for _ in range(steps):
        candidate = start - fraction * full_step
        loss, kl = evaluate(candidate)
        if loss < loss_before and kl <= max_kl:
            return LineSearch(candidate, fraction, loss, kl)
        fraction *= ratio
    return LineSearch(start, 0.0, loss_before, 0.0)


@dataclass(frozen=True)
class TRPO:
    max_kl: float = 0.01
    cg_iterations: int = 10
    damping: float = 1e-5
    """Added to the Fisher matrix: F + damping·I."""
    backtrack_ratio: float = 0.8
    backtrack_steps: int = 15


class OuterStep(NamedTuple):
    """What an outer step (`trpo_step`, `ppo_step`) did."""

    params: Params
    """The updated parameters (detached)."""
    loss_before: float
    loss_after: float
    kl: float
    """The mean KL(old ‖ new) of the step taken (0 when TRPO's line search took none)."""
    fraction: float
    """TRPO: the accepted fraction of the full step, 0 when the line search rejected every one;
    PPO: 1, every step is taken."""
    gradient_norm: float
    """Of the (first) gradient."""
    state: dict | None = None
    """The optimiser's state for the next outer step: PPO's Adam moments; None for TRPO."""


def trpo_step(
    params: Params,
    loss_and_kl: LossAndKL,
    config: TRPO = TRPO(),
    fisher: Callable[[Params], MatVec] | None = None,
    combine: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> OuterStep:
    """One TRPO update of `params`; `loss_and_kl` is evaluated with parameters that require
    gradients and must give the KL to the policy it was built around (0 at `params`).

    `fisher(params)`, when given, returns the product with the Hessian of the KL at `params`
    (flat vectors) by other means; by default it is the Hessian-vector product of the KL by
    double backpropagation.

    `combine`, when the surrogate and the KL are means over a part of the tasks, turns a value
    of this part (loss, KL, gradient, Fisher-vector product) into that of all tasks; every
    decision is then taken on the whole."""
    whole = combine or (lambda value: value)
    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    tensors = list(leaves.values())
    loss, kl = loss_and_kl(leaves, True)
    gradient = whole(flatten(torch.autograd.grad(loss, tensors, retain_graph=fisher is None)))
    loss = whole(loss.detach())
    if not (torch.isfinite(loss) and torch.isfinite(gradient).all()):
        raise NonFiniteError(
            f"the TRPO surrogate loss ({loss.item():g}) or its gradient is not finite; the "
            "policy was left unchanged. Check the rewards and observations for NaN or inf"
        )
    if fisher is None:
        kl_gradient = flatten(torch.autograd.grad(kl, tensors, create_graph=True))

        def hessian_product(vector: torch.Tensor) -> torch.Tensor:
            return flatten(torch.autograd.grad(kl_gradient @ vector, tensors, retain_graph=True))

        product = hessian_product
    else:
        product = fisher(params)

    def fisher_product(vector: torch.Tensor) -> torch.Tensor:
        return whole(product(vector)) + config.damping * vector

    direction = conjugate_gradient(fisher_product, gradient, config.cg_iterations)
    curvature = direction @ fisher_product(direction)
    full_step = direction * torch.sqrt(2 * config.max_kl / curvature.clamp_min(1e-12))
    start = flatten(leaves).detach()

    def evaluate(vector: torch.Tensor) -> tuple[float, float]:
        with torch.no_grad():
            new_loss, new_kl = whole(torch.stack(loss_and_kl(unflatten(vector, leaves), False)))
        return new_loss.item(), new_kl.item()

    search = line_search(
        evaluate,
        start,
        full_step.detach(),
        loss.item(),
        max_kl=config.max_kl,
        ratio=config.backtrack_ratio,
        steps=config.backtrack_steps,
    )
    new_params = {k: v.detach().clone() for k, v in unflatten(search.params, leaves).items()}
    return OuterStep(
        new_params,
        loss.item(),
        search.loss,
        search.kl,
        search.fraction,
        gradient.norm().item(),
    )
