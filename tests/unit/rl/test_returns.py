"""Discounted returns, GAE and the linear feature baseline against hand computations."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from metagrad.rl import discounted_returns, fit_linear_baseline, gae, linear_baseline, normalise


def test_gae_equals_a_hand_computation_with_an_episode_end():
    gamma, lam = 0.9, 0.5
    rewards = torch.tensor([[1.0, 2.0, 3.0, 0.0], [-1.0, 0.5, 2.0, 1.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 1.0, 1.5, 9.0], [0.2, 0.4, 0.6, 0.8]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    # Episode 1 ends after 3 steps: no bootstrap from V_3 = 9, and A_3 = 0.
    d2 = 3.0 - 1.5
    d1 = 2.0 + gamma * 1.5 - 1.0
    d0 = 1.0 + gamma * 1.0 - 0.5
    first = [d0 + gamma * lam * (d1 + gamma * lam * d2), d1 + gamma * lam * d2, d2, 0.0]
    # Episode 2 runs to the horizon, which ends it too.
    e3 = 1.0 - 0.8
    e2 = 2.0 + gamma * 0.8 - 0.6
    e1 = 0.5 + gamma * 0.6 - 0.4
    e0 = -1.0 + gamma * 0.4 - 0.2
    a2 = e2 + gamma * lam * e3
    a1 = e1 + gamma * lam * a2
    second = [e0 + gamma * lam * a1, a1, a2, e3]
    out = gae(rewards, values, mask, gamma=gamma, gae_lambda=lam)
    assert out.tolist() == [pytest.approx(first), pytest.approx(second)]


def test_gae_with_lambda_one_is_return_minus_baseline():
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(3, 5, 7, generator=generator, dtype=torch.float64)
    values = torch.randn(3, 5, 7, generator=generator, dtype=torch.float64)
    mask = torch.ones(3, 5, 7, dtype=torch.float64)
    mask[0, 1, 4:] = 0
    rewards = rewards * mask
    returns = discounted_returns(rewards, mask, 0.97)
    out = gae(rewards, values, mask, gamma=0.97, gae_lambda=1.0)
    assert torch.allclose(out, (returns - values) * mask)


def test_discounted_returns_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 4.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    rewards = rewards * mask
    assert discounted_returns(rewards, mask, 0.5).tolist() == [[2.0, 2.0, 0.0]]


def test_linear_baseline_equals_a_least_squares_solve():
    generator = torch.Generator().manual_seed(1)
    tasks, rollouts, horizon = 2, 3, 6
    obs = torch.randn(tasks, rollouts, horizon, 2, generator=generator, dtype=torch.float64)
    returns = torch.randn(tasks, rollouts, horizon, generator=generator, dtype=torch.float64)
    mask = torch.ones(tasks, rollouts, horizon, dtype=torch.float64)
    mask[1, 2, 3:] = 0
    reg = 1e-5
    weights = fit_linear_baseline(obs, returns, mask, reg_coeff=reg)
    values = linear_baseline(obs, returns, mask, reg_coeff=reg)
    for task in range(tasks):
        rows, targets = [], []
        for r in range(rollouts):
            for t in range(horizon):
                if mask[task, r, t]:
                    o = obs[task, r, t].numpy()
                    s = t / 100
                    rows.append([*o, *(o**2), s, s**2, s**3, 1.0])
                    targets.append(returns[task, r, t].item())
        x, y = np.array(rows), np.array(targets)
        expected = np.linalg.solve(x.T @ x + reg * np.eye(x.shape[1]), x.T @ y)
        assert weights[task].numpy() == pytest.approx(expected, rel=1e-6, abs=1e-8)
        predicted = values[task][mask[task].bool()].numpy()
        assert predicted == pytest.approx(x @ expected, rel=1e-6, abs=1e-8)
    assert torch.all(values[1, 2, 3:] == 0)


def test_linear_baseline_retries_with_more_regularisation(monkeypatch):
    obs = torch.zeros(1, 2, 4, 2, dtype=torch.float64)
    returns = torch.ones(1, 2, 4, dtype=torch.float64)
    mask = torch.ones(1, 2, 4, dtype=torch.float64)
    calls = []
    solve = torch.linalg.lstsq

    def failing_once(a, b):
        calls.append(a.clone())
        out = solve(a, b)
        if len(calls) == 1:
            return SimpleNamespace(solution=torch.full_like(out.solution, float("nan")))
        return out

    monkeypatch.setattr(torch.linalg, "lstsq", failing_once)
    weights = fit_linear_baseline(obs, returns, mask, reg_coeff=1e-3)
    assert len(calls) == 2 and torch.isfinite(weights).all()
    # The zero observation features only see the regularisation: 1e-3, then 1e-2.
    assert calls[0][0, 0, 0].item() == pytest.approx(1e-3)
    assert calls[1][0, 0, 0].item() == pytest.approx(1e-2)


def test_normalise_over_each_tasks_valid_steps():
    values = torch.tensor([[1.0, 3.0, 100.0], [2.0, 2.0, 8.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    out = normalise(values, mask)
    assert out[0].tolist() == pytest.approx([-1.0, 1.0, 0.0])
    std = np.std([2.0, 2.0, 8.0])
    assert out[1].tolist() == pytest.approx([-2 / std, -2 / std, 4 / std])
