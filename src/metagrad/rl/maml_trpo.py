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

ProMP's parts (Rothfuss et al. 2019), each switchable: a PPO-clip outer step instead of TRPO
(`ppo`), the low-variance-curvature inner loss −mean π/π_old·A (`lvc`), and a penalty on the KL
between the pre-update policies that sampled the support episodes and those at θ
(`inner_kl_penalty`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from metagrad.algorithms.inner import adapt, sgd
from metagrad.models.functional import Params
from metagrad.rl.policy import Gaussian, kl_divergence, log_prob, policy
from metagrad.rl.ppo import PPO, ppo_step
from metagrad.rl.sampling import Batch
from metagrad.rl.trpo import TRPO, MatVec, OuterStep, flatten, trpo_step, unflatten


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean over each task's valid steps, `[T, N] → [T]`."""
    return (values * mask).sum(-1) / mask.sum(-1)


def _forward(params: Params, buffers: Params, observations: torch.Tensor) -> torch.Tensor:
    """The policy as `adapt()` sees a network: mean and log σ side by side, `[T, N, 2A]`."""
    dist = policy(params, observations)
    return torch.cat([dist.mean, dist.log_std.expand_as(dist.mean)], -1)


def _pg_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Σ_tasks −mean_t log π(a|s)·A: summed, so each task's copy of φ gets its own gradient.
    `targets` packs [action, advantage, mask] along the last dimension, or [action, advantage,
    mask, log π_old(a|s)] for the LVC form −mean_t π(a|s)/π_old(a|s)·A."""
    size = outputs.shape[-1] // 2
    dist = Gaussian(outputs[..., :size], outputs[..., size:])
    actions, adv, mask = targets[..., :size], targets[..., size], targets[..., size + 1]
    log_probs = log_prob(dist, actions)
    if targets.shape[-1] == size + 3:
        log_probs = torch.exp(log_probs - targets[..., size + 2])
    return -masked_mean(log_probs * adv, mask).sum()


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


def inner_path(
    params: Params,
    supports: Sequence[Batch],
    lrs: Sequence[float],
    *,
    first_order: bool,
    old_log_probs: Sequence[torch.Tensor] | None = None,
) -> list[Params]:
    """φ_0 = θ (one copy per task), φ_1, …: one policy-gradient step per support batch (step k
    with learning rate `lrs[k]`), each task from its own episodes. With `old_log_probs` (of
    each support batch's actions under the policy that sampled it), the steps take the LVC
    estimator's loss −mean π/π_old·A (ProMP), whose gradient at the sampling policy is the same
    and whose Hessian has no score-function outer-product term."""
    path = [per_task(params, supports[0].observations.shape[0])]
    for k, (batch, lr) in enumerate(zip(supports, lrs, strict=True)):
        columns = [batch.actions, batch.advantages.unsqueeze(-1), batch.mask.unsqueeze(-1)]
        if old_log_probs is not None:
            columns.append(old_log_probs[k].unsqueeze(-1))
        path.append(
            adapt(
                _forward,
                path[-1],
                {},
                batch.observations,
                torch.cat(columns, -1),
                loss_fn=_pg_loss,
                steps=1,
                optimizer=sgd(lr),
                first_order=first_order,
            ).params
        )
    return path


def inner_adapt(
    params: Params,
    supports: Sequence[Batch],
    lrs: Sequence[float],
    *,
    first_order: bool,
) -> Params:
    """φ after one policy-gradient step per support batch (`inner_path`'s last); per-task
    parameters `[T, …]`."""
    return inner_path(params, supports, lrs, first_order=first_order)[-1]


def surrogate(
    fast: Params,
    query: Batch,
    old: Gaussian,
    old_log_prob: torch.Tensor,
    clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean over tasks of −mean_t ratio·A, mean over tasks of mean_t KL(old ‖ new)); with
    `clip` = ε, PPO's −mean_t min(ratio·A, clip(ratio, 1 − ε, 1 + ε)·A)."""
    dist = policy(fast, query.observations)
    ratio = torch.exp(log_prob(dist, query.actions) - old_log_prob)
    gain = ratio * query.advantages
    if clip is not None:
        gain = torch.minimum(gain, ratio.clamp(1 - clip, 1 + clip) * query.advantages)
    loss = -masked_mean(gain, query.mask).mean()
    kl = masked_mean(kl_divergence(old, dist), query.mask).mean()
    return loss, kl


class Sampled(NamedTuple):
    """The policies that sampled a meta-iteration's episodes (at θ_old), held fixed while θ
    moves: the outer step's ratios and KLs are taken against them."""

    supports: list[Gaussian]
    """π_φk_old on support batch k's observations."""
    support_log_probs: list[torch.Tensor]
    """log π_φk_old of support batch k's actions, `[T, N]`."""
    query: Gaussian
    query_log_prob: torch.Tensor


@dataclass(frozen=True)
class MAMLTRPO:
    """MAML with a policy-gradient inner loop and a TRPO meta-optimiser, or with ProMP's
    parts (`ppo`, `lvc`, `inner_kl_penalty`), each switchable."""

    inner_lr: float = 0.1
    """α (0.1 for 2D navigation in the paper)."""
    inner_steps: int = 1
    first_order: bool = False
    gamma: float = 0.99
    gae_lambda: float = 1.0
    trpo: TRPO = field(default_factory=TRPO)
    ppo: PPO | None = None
    """When set, the outer step is PPO-clip with these settings (ProMP's) instead of TRPO."""
    lvc: bool = False
    """The inner steps take ProMP's low-variance-curvature loss (`inner_path`)."""
    inner_kl_penalty: float = 0.0
    """ProMP's η: the outer loss adds η · mean over inner steps of the mean
    KL(π_φk_old ‖ π_φk(θ)) on the support episodes, keeping the pre-update policies near those
    that sampled them."""

    def adapt(
        self,
        params: Params,
        supports: Sequence[Batch],
        *,
        first_order: bool,
        old_log_probs: Sequence[torch.Tensor] | None = None,
    ) -> Params:
        path = self.path(params, supports, first_order=first_order, old_log_probs=old_log_probs)
        return path[-1]

    def path(
        self,
        params: Params,
        supports: Sequence[Batch],
        *,
        first_order: bool,
        old_log_probs: Sequence[torch.Tensor] | None = None,
    ) -> list[Params]:
        lrs = [self.inner_lr] * len(supports)
        return inner_path(
            params, supports, lrs, first_order=first_order, old_log_probs=old_log_probs
        )

    def sampled(self, params: Params, supports: Sequence[Batch], query: Batch) -> Sampled:
        """The sampling policies of the episodes, from θ_old = `params`."""
        with torch.no_grad():
            path = self.path(params, supports, first_order=True)
            pairs = zip(path[:-1], supports, strict=True)
            dists = [policy(fast, batch.observations) for fast, batch in pairs]
            old = policy(path[-1], query.observations)
            return Sampled(
                dists,
                [log_prob(d, b.actions) for d, b in zip(dists, supports, strict=True)],
                old,
                log_prob(old, query.actions),
            )

    def meta_step(
        self,
        params: Params,
        supports: Sequence[Batch],
        query: Batch,
        combine: Callable[[torch.Tensor], torch.Tensor] | None = None,
        state: dict | None = None,
    ) -> OuterStep:
        """One outer update of θ from the support batches (sampled with θ, then with each
        intermediate φ) and the query batch (sampled with φ_old = φ(θ)). When the batches hold
        a part of the meta-batch, `combine` turns this part's means into the meta-batch's
        (`trpo_step`). `state`: the outer optimiser's from the previous step (PPO's Adam)."""
        sampled = self.sampled(params, supports, query)
        clip = self.ppo.clip if self.ppo else None

        def loss_and_kl(theta: Params, differentiable: bool) -> tuple[torch.Tensor, torch.Tensor]:
            first_order = self.first_order or not differentiable
            lvc = self._lvc(sampled)
            path = self.path(theta, supports, first_order=first_order, old_log_probs=lvc)
            loss, kl = surrogate(path[-1], query, sampled.query, sampled.query_log_prob, clip)
            if self.inner_kl_penalty:
                loss = loss + self.inner_kl_penalty * self._inner_kl(path, supports, sampled)
            return loss, kl

        if self.ppo is not None:
            return ppo_step(params, loss_and_kl, self.ppo, state, combine)

        def fisher(theta: Params) -> MatVec:
            return self.fisher_product(theta, supports, query, sampled.query, self._lvc(sampled))

        return trpo_step(params, loss_and_kl, self.trpo, fisher, combine)

    def _lvc(self, sampled: Sampled) -> list[torch.Tensor] | None:
        return sampled.support_log_probs if self.lvc else None

    @staticmethod
    def _inner_kl(path: list[Params], supports: Sequence[Batch], sampled: Sampled) -> torch.Tensor:
        kls = [
            masked_mean(kl_divergence(old, policy(fast, batch.observations)), batch.mask).mean()
            for fast, batch, old in zip(path[:-1], supports, sampled.supports, strict=True)
        ]
        return torch.stack(kls).mean()

    def fisher_product(
        self,
        params: Params,
        supports: Sequence[Batch],
        query: Batch,
        old: Gaussian,
        old_log_probs: Sequence[torch.Tensor] | None = None,
    ) -> MatVec:
        """v ↦ H v, H the Hessian w.r.t. θ of the mean KL(π_old ‖ π_φ(θ)) at θ = θ_old.

        There the KL's gradient w.r.t. the policy outputs is 0, so H = Jᵀ F J exactly, with J
        the Jacobian of the adapted policy's query outputs (mean, log σ) w.r.t. θ and F the
        Gaussian's Fisher matrix in those outputs (1/σ² on the mean, 2 on log σ, times each
        step's weight in the mean).

        Per task J = P S_K ⋯ S_1: P the policy's Jacobian at φ_K on the query observations, S_k
        = I − α ∇²L_k(φ_k−1) that of inner step k (the identity when first order). S_k is
        symmetric, so S_k y, in either direction, is a backward pass through step k's graph,
        built once: a product is two such passes per step, a forward-mode product and a
        backward pass through the policy on the query episodes, and never re-runs a step.
        """
        tasks = query.mask.shape[0]
        names = list(params)
        inputs = {k: v.detach().clone() for k, v in per_task(params, tasks).items()}
        steps: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
        for k, batch in enumerate(supports):
            if self.first_order:
                with torch.no_grad():
                    inputs = self._step(inputs, batch, k, old_log_probs, first_order=True)
                continue
            leaves = {name: v.requires_grad_() for name, v in inputs.items()}
            stepped = self._step(leaves, batch, k, old_log_probs, first_order=False)
            steps.append(([leaves[n] for n in names], [stepped[n] for n in names]))
            inputs = {name: v.detach() for name, v in stepped.items()}
        fast = {name: v.requires_grad_() for name, v in inputs.items()}
        adapted = {name: v.detach() for name, v in inputs.items()}

        def query_outputs(phi: Params) -> tuple[torch.Tensor, torch.Tensor]:
            dist = policy(phi, query.observations)
            return dist.mean, dist.log_std

        mean, log_std = query_outputs(fast)
        weights = query.mask / query.mask.sum(-1, keepdim=True) / tasks
        mean_metric = weights.unsqueeze(-1) * torch.exp(-2 * old.log_std)
        log_std_metric = 2.0 / tasks

        def through_steps(vectors: list[torch.Tensor], order: list) -> list[torch.Tensor]:
            for before, after in order:
                vectors = torch.autograd.grad(after, before, vectors, retain_graph=True)
            return list(vectors)

        def product(vector: torch.Tensor) -> torch.Tensor:
            tangent = [t.expand_as(adapted[n]) for n, t in unflatten(vector, params).items()]
            tangent = through_steps(tangent, steps)
            _, (d_mean, d_log_std) = torch.func.jvp(
                query_outputs, (adapted,), (dict(zip(names, tangent, strict=True)),)
            )
            grads = torch.autograd.grad(
                (mean, log_std),
                [fast[n] for n in names],
                grad_outputs=(mean_metric * d_mean, log_std_metric * d_log_std),
                retain_graph=True,
            )
            return flatten([g.sum(0) for g in through_steps(list(grads), steps[::-1])])

        return product

    def _step(
        self,
        fast: Params,
        batch: Batch,
        k: int,
        old_log_probs: Sequence[torch.Tensor] | None,
        *,
        first_order: bool,
    ) -> Params:
        """φ_k from φ_k−1 = `fast` (per task) on support batch k."""
        lvc = None if old_log_probs is None else [old_log_probs[k]]
        return inner_path(
            fast, [batch], [self.inner_lr], first_order=first_order, old_log_probs=lvc
        )[-1]

    def meta_gradient(self, params: Params, supports: Sequence[Batch], query: Batch) -> Params:
        """∇θ of the outer loss at θ (what TRPO preconditions, PPO's first step), for
        inspection and tests."""
        sampled = self.sampled(params, supports, query)
        leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
        path = self.path(
            leaves, supports, first_order=self.first_order, old_log_probs=self._lvc(sampled)
        )
        clip = self.ppo.clip if self.ppo else None
        loss, _ = surrogate(path[-1], query, sampled.query, sampled.query_log_prob, clip)
        if self.inner_kl_penalty:
            loss = loss + self.inner_kl_penalty * self._inner_kl(path, supports, sampled)
        grads = torch.autograd.grad(loss, list(leaves.values()))
        return dict(zip(leaves, grads, strict=True))


class Evaluation(NamedTuple):
    returns: torch.Tensor
    """Mean undiscounted return after 0, 1, …, steps policy-gradient steps, `[steps + 1]`."""
    ci95: torch.Tensor
    """Half-width of the 95% confidence interval over tasks (1.96 · sd / √T), `[steps + 1]`."""
    per_task: torch.Tensor
    """Each task's mean return, `[steps + 1, T]`."""
