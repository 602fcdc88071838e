"""The MAML-RL meta-gradient against plain autograd on a tiny linear Gaussian policy."""

import math

import pytest
import torch

from metagrad.rl import MAMLTRPO, Batch, init_policy, pg_loss
from metagrad.rl.maml_trpo import inner_adapt


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


@pytest.mark.parametrize("first_order", [False, True])
def test_fisher_product_equals_the_hessian_of_the_kl(first_order):
    """Jᵀ F J v against differentiating the mean KL twice through the inner step."""
    from metagrad.rl.maml_trpo import surrogate
    from metagrad.rl.policy import log_prob, policy
    from metagrad.rl.trpo import flatten

    generator = torch.Generator().manual_seed(3)
    params = init_policy(2, 2, (6,), init_std=0.8, generator=generator, dtype=torch.float64)
    support, query = random_batch(generator), random_batch(generator)
    algorithm = MAMLTRPO(inner_lr=0.3, first_order=first_order)
    with torch.no_grad():
        old = policy(algorithm.adapt(params, [support], first_order=True), query.observations)
        old_lp = log_prob(old, query.actions)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    fast = algorithm.adapt(leaves, [support], first_order=first_order)
    _, kl = surrogate(fast, query, old, old_lp)
    kl_grad = flatten(torch.autograd.grad(kl, list(leaves.values()), create_graph=True))
    product = algorithm.fisher_product(params, [support], query, old)
    for _ in range(3):
        v = torch.randn(kl_grad.shape, generator=generator, dtype=torch.float64)
        exact = flatten(torch.autograd.grad(kl_grad @ v, list(leaves.values()), retain_graph=True))
        assert torch.allclose(product(v), exact, rtol=1e-9, atol=1e-12)
