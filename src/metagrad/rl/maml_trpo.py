"""MAML for reinforcement learning (Finn et al. 2017, Algorithm 3): a policy-gradient inner
step, a TRPO outer step.

For each task of a meta-batch, R support episodes are sampled with θ and the policy adapts by
one vanilla policy-gradient step on them, φ = θ − α ∇θ L_pg(θ) with
L_pg = −mean_t log π(a_t | s_t) · A_t (metagrad's `adapt()` with `sgd(α)`). R query episodes are
then sampled with φ, and θ is updated by TRPO on the surrogate

    L(θ) = −mean_tasks mean_t  π_φ(θ)(a_t | s_t) / π_φold(a_t | s_t) · A_t,

whose gradient at θ = θ_old is the MAML meta-gradient (second order through the inner step, or
first order: the inner gradient treated as a constant). The trust region is the mean
KL(π_φold ‖ π_φ(θ)) over the query steps, so its Hessian, the Fisher matrix, is taken through
the adapted policy; every line-search candidate θ' is re-adapted on the same support episodes.

As in the paper and pytorch-maml-rl, the meta-gradient ignores that the support episodes'
distribution depends on θ (the term ProMP and DiCE add).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from metagrad.algorithms.inner import adapt, sgd
from metagrad.models.functional import Params
from metagrad.rl.policy import Gaussian, kl_divergence, log_prob, policy
from metagrad.rl.sampling import Batch
from metagrad.rl.trpo import TRPO, MatVec, TRPOStep, flatten, trpo_step, unflatten


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean over each task's valid steps, `[T, N] → [T]`."""
    return (values * mask).sum(-1) / mask.sum(-1)


def _forward(params: Params, buffers: Params, observations: torch.Tensor) -> torch.Tensor:
    """The policy as `adapt()` sees a network: mean and log σ side by side, `[T, N, 2A]`."""
    dist = policy(params, observations)
    return torch.cat([dist.mean, dist.log_std.expand_as(dist.mean)], -1)


def _pg_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Σ_tasks −mean_t log π(a|s)·A: summed, so each task's copy of φ gets its own gradient.
    `targets` packs [action, advantage, mask] along the last dimension."""
    size = outputs.shape[-1] // 2
    dist = Gaussian(outputs[..., :size], outputs[..., size:])
    actions, adv, mask = targets[..., :size], targets[..., size], targets[..., size + 1]
    return -masked_mean(log_prob(dist, actions) * adv, mask).sum()


def pg_loss(params: Params, batch: Batch) -> torch.Tensor:
    """The inner loss of every task, `[T]` (per-task parameters or one shared copy)."""
    log_probs = log_prob(policy(params, batch.observations), batch.actions)
    return -masked_mean(log_probs * batch.advantages, batch.mask)


def per_task(params: Params, tasks: int) -> Params:
    """One copy of θ per task (a view, so gradients flow back to θ summed over tasks)."""
    return {k: v if _batched(k, v) else v.expand(tasks, *v.shape) for k, v in params.items()}


def _batched(name: str, value: torch.Tensor) -> bool:
    """Whether a policy parameter already has a leading task dimension."""
    return value.dim() == (3 if name.endswith(".weight") else 2)


def inner_adapt(
    params: Params,
    supports: Sequence[Batch],
    lrs: Sequence[float],
    *,
    first_order: bool,
) -> Params:
    """φ: one policy-gradient step per support batch (step k with learning rate `lrs[k]`), each
    task from its own episodes. Returns per-task parameters `[T, …]`."""
    fast = per_task(params, supports[0].observations.shape[0])
    for batch, lr in zip(supports, lrs, strict=True):
        targets = torch.cat(
            [batch.actions, batch.advantages.unsqueeze(-1), batch.mask.unsqueeze(-1)], -1
        )
        fast = adapt(
            _forward,
            fast,
            {},
            batch.observations,
            targets,
            loss_fn=_pg_loss,
            steps=1,
            optimizer=sgd(lr),
            first_order=first_order,
        ).params
    return fast


def surrogate(
    fast: Params, query: Batch, old: Gaussian, old_log_prob: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean over tasks of −mean_t ratio·A, mean over tasks of mean_t KL(old ‖ new))."""
    dist = policy(fast, query.observations)
    ratio = torch.exp(log_prob(dist, query.actions) - old_log_prob)
    loss = -masked_mean(ratio * query.advantages, query.mask).mean()
    kl = masked_mean(kl_divergence(old, dist), query.mask).mean()
    return loss, kl


@dataclass(frozen=True)
class MAMLTRPO:
    """MAML with a policy-gradient inner loop and a TRPO meta-optimiser."""

    inner_lr: float = 0.1
    """α (0.1 for 2D navigation in the paper)."""
    inner_steps: int = 1
    first_order: bool = False
    gamma: float = 0.99
    gae_lambda: float = 1.0
    trpo: TRPO = field(default_factory=TRPO)

    def adapt(self, params: Params, supports: Sequence[Batch], *, first_order: bool) -> Params:
        lrs = [self.inner_lr] * len(supports)
        return inner_adapt(params, supports, lrs, first_order=first_order)

    def meta_step(self, params: Params, supports: Sequence[Batch], query: Batch) -> TRPOStep:
        """One TRPO update of θ from the support batches (sampled with θ, then with each
        intermediate φ) and the query batch (sampled with φ_old = φ(θ))."""
        with torch.no_grad():
            old = policy(self.adapt(params, supports, first_order=True), query.observations)
            old = old.detach()
            old_log_prob = log_prob(old, query.actions)

        def loss_and_kl(theta: Params, differentiable: bool) -> tuple[torch.Tensor, torch.Tensor]:
            first_order = self.first_order or not differentiable
            fast = self.adapt(theta, supports, first_order=first_order)
            return surrogate(fast, query, old, old_log_prob)

        def fisher(theta: Params) -> MatVec:
            return self.fisher_product(theta, supports, query, old)

        return trpo_step(params, loss_and_kl, self.trpo, fisher)

    def fisher_product(
        self, params: Params, supports: Sequence[Batch], query: Batch, old: Gaussian
    ) -> MatVec:
        """v ↦ H v, H the Hessian w.r.t. θ of the mean KL(π_old ‖ π_φ(θ)) at θ = θ_old.

        There the KL's gradient w.r.t. the policy outputs is 0, so H = Jᵀ F J exactly, with J
        the Jacobian of the adapted policy's query outputs (mean, log σ) w.r.t. θ and F the
        Gaussian's Fisher matrix in those outputs (1/σ² on the mean, 2 on log σ, times each
        step's weight in the mean). J v is a forward-mode product, Jᵀ u a backward pass through
        one retained graph: about half the cost of differentiating the KL twice through the
        second-order inner step.
        """
        names = list(params)
        first_order = self.first_order

        def outputs(theta: Params) -> tuple[torch.Tensor, torch.Tensor]:
            dist = policy(self.adapt(theta, supports, first_order=first_order), query.observations)
            return dist.mean, dist.log_std

        leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
        mean, log_std = outputs(leaves)
        tasks = query.mask.shape[0]
        weights = query.mask / query.mask.sum(-1, keepdim=True) / tasks
        mean_metric = weights.unsqueeze(-1) * torch.exp(-2 * old.log_std)
        log_std_metric = 2.0 / tasks
        detached = {k: v.detach() for k, v in params.items()}

        def product(vector: torch.Tensor) -> torch.Tensor:
            tangent = unflatten(vector, detached)
            _, (d_mean, d_log_std) = torch.func.jvp(outputs, (detached,), (tangent,))
            grads = torch.autograd.grad(
                (mean, log_std),
                [leaves[k] for k in names],
                grad_outputs=(mean_metric * d_mean, log_std_metric * d_log_std),
                retain_graph=True,
            )
            return flatten(grads)

        return product

    def meta_gradient(self, params: Params, supports: Sequence[Batch], query: Batch) -> Params:
        """∇θ of the surrogate at θ (what TRPO preconditions), for inspection and tests."""
        leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
        with torch.no_grad():
            old = policy(self.adapt(params, supports, first_order=True), query.observations)
            old_log_prob = log_prob(old, query.actions)
        fast = self.adapt(leaves, supports, first_order=self.first_order)
        loss, _ = surrogate(fast, query, old, old_log_prob)
        grads = torch.autograd.grad(loss, list(leaves.values()))
        return dict(zip(leaves, grads, strict=True))


class Evaluation(NamedTuple):
    returns: torch.Tensor
    """Mean undiscounted return after 0, 1, …, steps policy-gradient steps, `[steps + 1]`."""
    ci95: torch.Tensor
    """Half-width of the 95% confidence interval over tasks (1.96 · sd / √T), `[steps + 1]`."""
    per_task: torch.Tensor
    """Each task's mean return, `[steps + 1, T]`."""
