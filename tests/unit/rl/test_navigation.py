"""The batched navigation environment against a per-episode reference in plain floats."""

import math

import pytest
import torch

from metagrad.rl import Navigation2D, fixed_tasks, init_policy, rollout


def reference_episode(goal, actions, max_action=0.1, radius=0.01):
    """One episode as the original PointEnvRandGoal steps it: clip, move, reward, done."""
    x, y = 0.0, 0.0
    positions, rewards = [], []
    for ax, ay in actions:
        x += min(max(ax, -max_action), max_action)
        y += min(max(ay, -max_action), max_action)
        dx, dy = x - goal[0], y - goal[1]
        positions.append((x, y))
        rewards.append(-math.sqrt(dx * dx + dy * dy))
        if radius is not None and abs(dx) < radius and abs(dy) < radius:
            break
    return positions, rewards


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_steps_equal_the_per_episode_reference(seed):
    env = Navigation2D(horizon=30)
    generator = torch.Generator().manual_seed(seed)
    tasks, rollouts = 3, 4
    goals = env.sample_tasks(generator, tasks, torch.float64)
    # Large actions so that clipping matters; a biased walk so some episodes reach their goal.
    actions = 0.15 * torch.randn(
        tasks, rollouts, env.horizon, 2, generator=generator, dtype=torch.float64
    )
    positions = env.reset(goals, rollouts)
    alive = torch.ones(tasks, rollouts, dtype=torch.float64)
    rewards, trace, masks = [], [], []
    for t in range(env.horizon):
        masks.append(alive)
        step = env.step(positions, goals, actions[:, :, t], alive)
        positions = step.positions
        rewards.append(step.rewards)
        trace.append(positions)
        alive = alive * ~step.done
    rewards, trace, masks = torch.stack(rewards, 2), torch.stack(trace, 2), torch.stack(masks, 2)
    for i in range(tasks):
        for r in range(rollouts):
            ref_positions, ref_rewards = reference_episode(
                goals[i].tolist(), actions[i, r].tolist()
            )
            n = len(ref_rewards)
            assert masks[i, r].sum().item() == n
            assert rewards[i, r, :n].tolist() == pytest.approx(ref_rewards, abs=1e-12)
            assert torch.all(rewards[i, r, n:] == 0)
            expected = torch.tensor(ref_positions, dtype=torch.float64)
            assert torch.allclose(trace[i, r, :n], expected, rtol=0, atol=1e-12)


def test_reaching_the_goal_ends_the_episode():
    env = Navigation2D(horizon=10)
    goals = torch.tensor([[0.25, -0.245]], dtype=torch.float64)
    positions = env.reset(goals, 1)
    alive = torch.ones(1, 1, dtype=torch.float64)
    action = torch.tensor([[[0.05, -0.05]]], dtype=torch.float64)
    rewards = []
    for _ in range(env.horizon):
        step = env.step(positions, goals, action, alive)
        positions, alive = step.positions, alive * ~step.done
        rewards.append(step.rewards.item())
    # Within 0.01 on both coordinates after the 5th move, (0.25, −0.25): the episode ends there,
    # that move still earns −0.005, and the point no longer moves.
    assert positions.squeeze().tolist() == pytest.approx([0.25, -0.25])
    assert rewards[3] == pytest.approx(-((0.05**2 + 0.045**2) ** 0.5))
    assert rewards[4] == pytest.approx(-0.005) and rewards[5:] == [0.0] * 5
    assert alive.item() == 0


def test_fixed_goals_are_a_pure_function_of_seed_split_and_index():
    env = Navigation2D()
    a = fixed_tasks(env, 3, "train", 7, 20)
    assert torch.equal(a, fixed_tasks(env, 3, "train", 7, 20))
    assert not torch.equal(a, fixed_tasks(env, 3, "train", 8, 20))
    assert not torch.equal(a, fixed_tasks(env, 3, "test", 7, 20))
    assert a.min() >= -0.5 and a.max() <= 0.5


def test_rollout_records_the_observation_before_each_action():
    env = Navigation2D(horizon=20, goal_radius=None)
    params = init_policy(
        2, 2, (8,), generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    goals = env.sample_tasks(torch.Generator().manual_seed(1), 2, torch.float64)
    episodes = rollout(env, params, goals, 3, torch.Generator().manual_seed(2))
    assert episodes.observations.shape == (2, 3, 20, 2)
    assert torch.all(episodes.observations[:, :, 0] == 0)
    moves = episodes.actions.clamp(-0.1, 0.1)
    assert torch.allclose(episodes.observations[:, :, 1:], moves.cumsum(2)[:, :, :-1])
    final = moves.sum(2) - goals[:, None]
    assert torch.allclose(episodes.rewards[:, :, -1], -final.norm(dim=-1))
    assert episodes.steps == 2 * 3 * 20


def test_a_part_of_the_tasks_is_rolled_out_as_in_the_whole_meta_batch():
    """What a process of several samples: its tasks' episodes, the same as in one process."""
    env = Navigation2D(horizon=15)
    params = init_policy(
        2, 2, (8,), generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    goals = env.sample_tasks(torch.Generator().manual_seed(1), 5, torch.float64)
    whole = rollout(env, params, goals, 3, torch.Generator().manual_seed(2))
    parts = [
        rollout(env, params, goals, 3, torch.Generator().manual_seed(2), part)
        for part in (slice(0, 3), slice(3, 5))
    ]
    for name, value in whole._asdict().items():
        joined = torch.cat([getattr(part, name) for part in parts])
        torch.testing.assert_close(joined, value, rtol=1e-12, atol=1e-12, msg=name)


def test_normalized_actions_are_scaled_as_rllabs_normalize_wrapper():
    """rllab's `normalize` maps a ∈ [−1, 1] to lb + (a + 1)·(ub − lb)/2, then clips."""
    env = Navigation2D(horizon=25, goal_radius=None, normalized_actions=True)
    generator = torch.Generator().manual_seed(3)
    goals = env.sample_tasks(generator, 2, torch.float64)
    actions = 1.5 * torch.randn(2, 3, env.horizon, 2, generator=generator, dtype=torch.float64)
    positions = env.reset(goals, 3)
    alive = torch.ones(2, 3, dtype=torch.float64)
    for t in range(env.horizon):
        positions = env.step(positions, goals, actions[:, :, t], alive).positions
    low, high = -0.1, 0.1
    scaled = [
        [
            [[min(max(low + (a + 1) * (high - low) / 2, low), high) for a in step] for step in ep]
            for ep in task
        ]
        for task in actions.tolist()
    ]
    for i in range(2):
        for r in range(3):
            x = [sum(step[d] for step in scaled[i][r]) for d in (0, 1)]
            assert positions[i, r].tolist() == pytest.approx(x, abs=1e-12)
