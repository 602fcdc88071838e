"""Conjugate gradient, the trust region and the backtracking line search."""

import pytest
import torch

from metagrad.errors import NonFiniteError
from metagrad.rl import TRPO, conjugate_gradient, init_policy, line_search, trpo_step
from metagrad.rl.policy import kl_divergence, log_prob, policy


def test_conjugate_gradient_solves_an_spd_system():
    generator = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=generator, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iterations=6)
    assert torch.allclose(x, torch.linalg.solve(a, b), atol=1e-8)
    # Fewer iterations than dimensions: only an approximation, but a descent direction.
    rough = conjugate_gradient(lambda v: a @ v, b, iterations=2)
    assert rough @ b > 0


def test_line_search_backtracks_past_an_overshooting_step():
    # f(x) = (x − 1)² − 1 from x = 0 with a full step to x = 4: f(4) = 8 and f(2) = 0 do not
    # improve on f(0) = 0; x = 1 (a quarter of the step) does.
    def evaluate(x):
        return ((x - 1) ** 2 - 1).item(), 0.0

    start, step = torch.zeros(1), torch.tensor([-4.0])
    out = line_search(evaluate, start, step, 0.0, max_kl=0.01, ratio=0.5, steps=5)
    assert out.fraction == 0.25 and out.params.item() == 1.0 and out.loss == -1.0


def test_line_search_rejects_improvements_outside_the_trust_region():
    def evaluate(x):
        return -x.item(), x.item() ** 2  # every step improves; the KL only allows x ≤ 0.1

    out = line_search(
        evaluate, torch.zeros(1), torch.tensor([-1.0]), 0.0, max_kl=0.01, ratio=0.5, steps=10
    )
    assert out.fraction == 0.5**4 and out.kl <= 0.01
    # Nothing acceptable within the allowed backtracking: the parameters are kept.
    none = line_search(
        evaluate, torch.zeros(1), torch.tensor([-1.0]), 0.0, max_kl=0.01, ratio=0.5, steps=3
    )
    assert none.fraction == 0.0 and none.params.item() == 0.0


def policy_problem(seed=0):
    generator = torch.Generator().manual_seed(seed)
    params = init_policy(2, 2, (16,), generator=generator, dtype=torch.float64)
    obs = torch.randn(1, 200, 2, generator=generator, dtype=torch.float64)
    actions = torch.randn(1, 200, 2, generator=generator, dtype=torch.float64)
    adv = torch.randn(1, 200, generator=generator, dtype=torch.float64)
    old = policy(params, obs).detach()
    old_lp = log_prob(old, actions)

    def loss_and_kl(theta, differentiable):
        dist = policy(theta, obs)
        loss = -(torch.exp(log_prob(dist, actions) - old_lp) * adv).mean()
        return loss, kl_divergence(old, dist).mean()

    return params, loss_and_kl


@pytest.mark.parametrize("max_kl", [0.01, 0.001])
def test_trpo_step_improves_within_the_kl_bound(max_kl):
    params, loss_and_kl = policy_problem()
    step = trpo_step(params, loss_and_kl, TRPO(max_kl=max_kl))
    assert step.fraction > 0
    loss, kl = loss_and_kl(step.params, False)
    assert loss.item() < step.loss_before and loss.item() == pytest.approx(step.loss_after)
    assert kl.item() <= max_kl and kl.item() == pytest.approx(step.kl)
    # The full step is sized by the quadratic model of the KL, so it lands near the bound.
    assert kl.item() > 0.3 * max_kl * step.fraction**2


def test_trpo_keeps_the_parameters_when_no_step_is_accepted():
    params, loss_and_kl = policy_problem(1)

    def never_better(theta, differentiable):
        loss, kl = loss_and_kl(theta, differentiable)
        # Candidates (evaluated without a graph) always look worse than the start.
        return (loss if differentiable else loss.detach() + 1.0), kl

    step = trpo_step(params, never_better, TRPO(backtrack_steps=4))
    assert step.fraction == 0.0 and step.kl == 0.0
    for name, value in params.items():
        assert torch.equal(step.params[name], value)


def test_a_non_finite_surrogate_stops_the_step_with_a_clear_error():
    params = {"w": torch.ones(3, dtype=torch.float64)}

    def loss_and_kl(theta, differentiable):
        return (theta["w"] * float("nan")).sum(), (theta["w"] - 1).square().sum()

    with pytest.raises(NonFiniteError, match="not finite; the policy was left unchanged"):
        trpo_step(params, loss_and_kl)
