"""The MAML-RL meta-gradient against plain autograd on a tiny linear Gaussian policy, and ProMP's
parts: the PPO-clip outer step, the LVC inner loss and the inner KL penalty."""

import math

import pytest
import torch

from metagrad.rl import MAMLTRPO, PPO, Batch, init_policy, pg_loss, ppo_step, surrogate
from metagrad.rl.maml_trpo import inner_adapt
from metagrad.rl.policy import Gaussian, kl_divergence, log_prob, policy


def gaussian_log_prob(mean, log_std, actions):
    return (
        -0.5 * ((actions - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    ).sum(-1)


def random_batch(generator, tasks=3, steps=12):
    def rand(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    mask = torch.ones(tasks, steps, dtype=torch.float64)
    mask[1, 8:] = 0
    return Batch(rand(tasks, steps, 2), rand(tasks, steps, 2), rand(tasks, steps) * mask, mask)


def reference_meta_gradient(params, support, query, lr, first_order):
    """Task by task: φ = θ − α ∇θ L_pg(θ) (create_graph unless first order), then the gradient
    of −mean ratio·A at φ(θ), averaged over tasks."""
    names = list(params)
    theta = [params[k].detach().clone().requires_grad_() for k in names]
    total = 0
    for t in range(support.observations.shape[0]):
        w, b, log_std = theta

        def loss_at(w, b, log_std, batch=support, t=t):
            mean = batch.observations[t] @ w.T + b
            lp = gaussian_log_prob(mean, log_std, batch.actions[t])
            m = batch.mask[t]
            return -(lp * batch.advantages[t] * m).sum() / m.sum()

        grads = torch.autograd.grad(loss_at(w, b, log_std), theta, create_graph=not first_order)
        if first_order:
            grads = [g.detach() for g in grads]
        fw, fb, fs = (p - lr * g for p, g in zip(theta, grads))
        mean = query.observations[t] @ fw.T + fb
        lp = gaussian_log_prob(mean, fs, query.actions[t])
        ratio = torch.exp(lp - lp.detach())
        m = query.mask[t]
        total = total - (ratio * query.advantages[t] * m).sum() / m.sum()
    grads = torch.autograd.grad(total / support.observations.shape[0], theta)
    return dict(zip(names, grads))


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_equals_plain_autograd(first_order):
    generator = torch.Generator().manual_seed(0)
    params = init_policy(2, 2, (), init_std=0.7, generator=generator, dtype=torch.float64)
    assert sorted(params) == ["linear0.bias", "linear0.weight", "log_std"]
    support, query = random_batch(generator), random_batch(generator)
    algorithm = MAMLTRPO(inner_lr=0.3, first_order=first_order)
    got = algorithm.meta_gradient(params, [support], query)
    expected = reference_meta_gradient(params, support, query, 0.3, first_order)
    for name in params:
        assert torch.allclose(got[name], expected[name], rtol=1e-10, atol=1e-12), name


def test_second_order_terms_matter():
    generator = torch.Generator().manual_seed(1)
    params = init_policy(2, 2, (), generator=generator, dtype=torch.float64)
    support, query = random_batch(generator), random_batch(generator)
    second = MAMLTRPO(inner_lr=0.3).meta_gradient(params, [support], query)
    first = MAMLTRPO(inner_lr=0.3, first_order=True).meta_gradient(params, [support], query)
    assert not torch.allclose(second["linear0.weight"], first["linear0.weight"], atol=1e-6)


def test_inner_step_adapts_each_task_on_its_own_episodes():
    generator = torch.Generator().manual_seed(2)
    params = init_policy(2, 2, (5,), generator=generator, dtype=torch.float64)
    support = random_batch(generator)
    fast = inner_adapt(params, [support], [0.1], first_order=True)
    for t in range(3):
        one = Batch(*(x[t : t + 1] for x in support))
        leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
        grads = torch.autograd.grad(pg_loss(leaves, one).sum(), list(leaves.values()))
        for (name, p), g in zip(params.items(), grads):
            assert torch.allclose(fast[name][t], p - 0.1 * g), (t, name)


@pytest.mark.parametrize(
    ("first_order", "inner_steps", "lvc"),
    [(False, 1, False), (True, 1, False), (False, 2, False), (False, 2, True), (True, 2, True)],
)
def test_fisher_product_equals_the_hessian_of_the_kl(first_order, inner_steps, lvc):
    """Jᵀ F J v against differentiating the mean KL twice through the inner steps."""
    from metagrad.rl.trpo import flatten

    generator = torch.Generator().manual_seed(3)
    params = init_policy(2, 2, (6,), init_std=0.8, generator=generator, dtype=torch.float64)
    supports = [random_batch(generator) for _ in range(inner_steps)]
    query = random_batch(generator)
    algorithm = MAMLTRPO(inner_lr=0.3, inner_steps=inner_steps, first_order=first_order)
    old_log_probs = None
    if lvc:
        old_log_probs = [
            0.1 * torch.randn(s.mask.shape, generator=generator, dtype=torch.float64)
            for s in supports
        ]
    with torch.no_grad():
        fast = algorithm.adapt(params, supports, first_order=True, old_log_probs=old_log_probs)
        old = policy(fast, query.observations)
        old_lp = log_prob(old, query.actions)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    fast = algorithm.adapt(leaves, supports, first_order=first_order, old_log_probs=old_log_probs)
    _, kl = surrogate(fast, query, old, old_lp)
    kl_grad = flatten(torch.autograd.grad(kl, list(leaves.values()), create_graph=True))
    product = algorithm.fisher_product(params, supports, query, old, old_log_probs)
    for _ in range(3):
        v = torch.randn(kl_grad.shape, generator=generator, dtype=torch.float64)
        exact = flatten(torch.autograd.grad(kl_grad @ v, list(leaves.values()), retain_graph=True))
        assert torch.allclose(product(v), exact, rtol=1e-9, atol=1e-12)


def test_the_clipped_surrogate_gives_nothing_for_ratios_beyond_the_clip():
    """Two tasks of one step: old mean 0, new mean 1, σ = 1, action 1.5, so the ratio is e.
    With A = +1 it is past 1 + ε and clipped (no gradient); with A = −1 the unclipped term is
    the smaller and keeps its gradient, e · (a − μ) = e/2, halved by the mean over tasks."""
    log_std = torch.zeros(1, 1, dtype=torch.float64)
    old = Gaussian(torch.zeros(2, 1, 1, dtype=torch.float64), log_std)
    shift = torch.zeros(2, 1, dtype=torch.float64, requires_grad=True)
    actions = torch.full((2, 1, 1), 1.5, dtype=torch.float64)
    advantages = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    query = Batch(torch.zeros(2, 1, 1, dtype=torch.float64), actions, advantages, torch.ones(2, 1))
    fast = {
        "linear0.weight": torch.zeros(2, 1, 1, dtype=torch.float64),
        "linear0.bias": shift + 1.0,
        "log_std": log_std,
    }
    old_lp = log_prob(old, actions)
    loss, _ = surrogate(fast, query, old, old_lp, clip=0.3)
    (grad,) = torch.autograd.grad(loss, shift)
    assert loss.item() == pytest.approx((math.e - 1.3) / 2)
    assert grad[0].item() == 0.0
    assert grad[1].item() == pytest.approx(math.e / 4)
    unclipped, _ = surrogate(fast, query, old, old_lp)
    assert unclipped.item() == pytest.approx(0.0)


def quadratic(target):
    def loss_and_kl(params, differentiable):
        x = params["x"]
        return (x - target).square().sum(), (x - target).abs().sum()

    return loss_and_kl


def test_ppo_steps_lower_the_loss_and_carry_adams_moments():
    """5 steps, then 3 more from the returned state, equal 8 steps at once, bit for bit."""
    target = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    start = {"x": torch.zeros(3, dtype=torch.float64)}
    objective = quadratic(target)
    five = ppo_step(start, objective, PPO(epochs=5, lr=0.1))
    assert five.loss_after < five.loss_before == pytest.approx(14.0)
    assert five.fraction == 1.0 and five.state["state"][0]["step"].item() == 5
    then = ppo_step(five.params, objective, PPO(epochs=3, lr=0.1), five.state)
    eight = ppo_step(start, objective, PPO(epochs=8, lr=0.1))
    assert torch.equal(then.params["x"], eight.params["x"])
    fresh = ppo_step(five.params, objective, PPO(epochs=3, lr=0.1))
    assert not torch.equal(fresh.params["x"], eight.params["x"])


def reference_lvc_meta_gradient(params, support, query, lr):
    """Task by task in plain autograd: the inner loss −mean π/π_old·A with π_old = π at θ
    (detached), a second-order step, then the outer −mean ratio·A at φ(θ)."""
    names = list(params)
    theta = [params[k].detach().clone().requires_grad_() for k in names]
    total = 0
    for t in range(support.observations.shape[0]):

        def log_probs(w, b, log_std, batch, t=t):
            mean = batch.observations[t] @ w.T + b
            z = (batch.actions[t] - mean) / log_std.exp()
            return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

        lp = log_probs(*theta, support)
        m = support.mask[t]
        inner = -(torch.exp(lp - lp.detach()) * support.advantages[t] * m).sum() / m.sum()
        grads = torch.autograd.grad(inner, theta, create_graph=True)
        fast = [p - lr * g for p, g in zip(theta, grads)]
        lq = log_probs(*fast, query)
        m = query.mask[t]
        total = total - (torch.exp(lq - lq.detach()) * query.advantages[t] * m).sum() / m.sum()
    grads = torch.autograd.grad(total / support.observations.shape[0], theta)
    return dict(zip(names, grads))


def test_the_lvc_meta_gradient_equals_plain_autograd_and_differs_from_the_pg_one():
    generator = torch.Generator().manual_seed(5)
    params = init_policy(2, 2, (), init_std=0.7, generator=generator, dtype=torch.float64)
    support, query = random_batch(generator), random_batch(generator)
    lvc = MAMLTRPO(inner_lr=0.3, lvc=True).meta_gradient(params, [support], query)
    expected = reference_lvc_meta_gradient(params, support, query, 0.3)
    for name in params:
        torch.testing.assert_close(lvc[name], expected[name], rtol=1e-10, atol=1e-12)
    pg = MAMLTRPO(inner_lr=0.3).meta_gradient(params, [support], query)
    assert not torch.allclose(lvc["linear0.weight"], pg["linear0.weight"], atol=1e-6)
    first = MAMLTRPO(inner_lr=0.3, lvc=True, first_order=True).meta_gradient(
        params, [support], query
    )
    pg_first = MAMLTRPO(inner_lr=0.3, first_order=True).meta_gradient(params, [support], query)
    for name in params:  # the same inner step: only the second-order terms differ
        torch.testing.assert_close(first[name], pg_first[name], rtol=1e-12, atol=1e-14)


def test_the_inner_kl_penalty_holds_the_pre_update_policy_near_the_sampling_one():
    generator = torch.Generator().manual_seed(6)
    params = init_policy(2, 2, (8,), init_std=0.7, generator=generator, dtype=torch.float64)
    support, query = random_batch(generator), random_batch(generator)

    def pre_update_kl(penalty: float) -> float:
        ppo = PPO(epochs=5, lr=0.05)
        algorithm = MAMLTRPO(inner_lr=0.3, ppo=ppo, lvc=True, inner_kl_penalty=penalty)
        step = algorithm.meta_step(params, [support], query)
        before = policy(params, support.observations)
        after = policy(step.params, support.observations)
        return kl_divergence(before, after).mean().item()

    free, held = pre_update_kl(0.0), pre_update_kl(100.0)
    assert held < 0.5 * free
