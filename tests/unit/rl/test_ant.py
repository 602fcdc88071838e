"""Ant direction and velocity tasks against Gymnasium's own Ant-v5.

The reference is the stock environment, stepped with the same seeds and actions; the meta-RL
observation, reward and end of episode (rllab's ant, as the original MAML code and
pytorch-maml-rl have them) are computed here from its MuJoCo state.
"""

import importlib
import sys

import numpy as np
import pytest
import torch

gymnasium = pytest.importorskip("gymnasium")
pytest.importorskip("mujoco")

from metagrad.errors import ConfigError  # noqa: E402
from metagrad.rl import fixed_tasks, init_policy, train_maml  # noqa: E402
from metagrad.rl.ant import AntDir, AntTasks  # noqa: E402


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """The stock model may warn into MUJOCO_LOG.TXT in the working directory."""
    monkeypatch.chdir(tmp_path)


def reference_steps(seed, actions, task_reward):
    """Observations, rewards and ends of one stock Ant-v5 episode with the meta-RL observation
    (qpos[2:], qvel, clip(cfrc_ext, ±1), the torso's orientation and position) and reward
    task_reward(v) + 0.05 − 0.005‖a‖² − 0.0005‖clip(cfrc_ext)‖²."""
    env = gymnasium.make("Ant-v5").unwrapped
    env.reset(seed=seed)
    torso = env.data.body("torso")

    def observe():
        data = env.data
        contacts = np.clip(data.cfrc_ext, -1, 1).flatten()
        return np.concatenate([data.qpos[2:], data.qvel, contacts, torso.xmat, torso.xpos])

    observations, rewards, ends = [observe()], [], []
    for action in actions:
        clipped = np.clip(action, -1, 1)
        before = torso.xpos[0]
        env.step(clipped)
        velocity = (torso.xpos[0] - before) / env.dt
        observation = observe()
        contact = 0.0005 * np.sum(observation[27:111] ** 2)
        observations.append(observation)
        rewards.append(task_reward(velocity) + 0.05 - 0.005 * np.sum(clipped**2) - contact)
        state = np.concatenate([env.data.qpos, env.data.qvel])
        ends.append(not (np.isfinite(state).all() and 0.2 <= env.data.qpos[2] <= 1.0))
    env.close()
    return np.stack(observations), np.array(rewards), np.array(ends)


@pytest.mark.parametrize(
    ("kind", "tasks", "task_reward"),
    [
        ("direction", [1.0, -1.0], lambda task, v: task * v),
        ("velocity", [0.4, 2.6], lambda task, v: 1.0 - abs(v - task)),
    ],
)
def test_batched_episodes_equal_the_stock_environment(kind, tasks, task_reward):
    env = AntTasks(kind, horizon=6)
    rollouts, steps = 2, 6
    task_tensor = torch.tensor(tasks, dtype=torch.float64)[:, None]
    simulation = env.simulate(task_tensor, rollouts, torch.Generator().manual_seed(4))
    seeds = torch.randint(
        2**31 - 1, (len(tasks) * rollouts,), generator=torch.Generator().manual_seed(4)
    )
    actions = 1.5 * torch.randn(steps, len(tasks), rollouts, 8, dtype=torch.float64)
    alive = torch.ones(len(tasks), rollouts, dtype=torch.float64)
    observations, rewards, ends = [simulation.observe()], [], []
    for action in actions:
        step = simulation.step(action, alive)
        observations.append(step.observations)
        rewards.append(step.rewards)
        ends.append(step.done)
    observations, rewards = torch.stack(observations, 2), torch.stack(rewards, 2)
    ends = torch.stack(ends, 2)
    assert observations.shape == (len(tasks), rollouts, steps + 1, 123)
    for t, task in enumerate(tasks):
        for r in range(rollouts):
            expected_obs, expected_rewards, expected_ends = reference_steps(
                int(seeds[t * rollouts + r]),
                actions[:, t, r].numpy(),
                lambda v, task=task: task_reward(task, v),
            )
            np.testing.assert_allclose(observations[t, r].numpy(), expected_obs, atol=1e-12)
            np.testing.assert_allclose(rewards[t, r].numpy(), expected_rewards, atol=1e-12)
            np.testing.assert_array_equal(ends[t, r].numpy(), expected_ends)
    env.close()


def test_gymnasiums_vector_environment_gives_the_same_episodes():
    tasks = torch.tensor([[0.5], [2.5]], dtype=torch.float64)
    actions = 2 * torch.randn(8, 2, 2, 8, dtype=torch.float64)
    results = []
    for vectorization in ("threads", "sync"):
        env = AntTasks("velocity", horizon=8, vectorization=vectorization)
        simulation = env.simulate(tasks, 2, torch.Generator().manual_seed(2))
        alive = torch.ones(2, 2, dtype=torch.float64)
        steps = [simulation.step(action, alive) for action in actions]
        results.append((simulation.observe(), [(s.observations, s.rewards) for s in steps]))
        env.close()
    (first, threads), (first_sync, sync) = results
    assert torch.equal(first, first_sync)
    for (obs, rewards), (obs_sync, rewards_sync) in zip(threads, sync, strict=True):
        assert torch.equal(obs, obs_sync) and torch.equal(rewards, rewards_sync)


def test_an_episode_ends_when_the_torso_leaves_the_healthy_heights():
    env = AntDir()
    env.reset(seed=0)
    qpos, qvel = env.data.qpos.copy(), env.data.qvel.copy()
    for height, ends in ((0.55, False), (1.5, True)):
        qpos[2] = height
        env.set_state(qpos, np.zeros_like(qvel))
        *_, terminated, truncated, _ = env.step(np.zeros(8))
        assert terminated is ends and not truncated, height
    observations = np.zeros((4, 123))
    observations[:, 0] = [0.5, 0.1, 1.2, 0.5]  # the torso's height
    observations[3, 5] = np.nan
    _, terminated = AntDir.outcome(np.ones(4), np.zeros(4), np.zeros((4, 8)), observations)
    assert terminated.tolist() == [False, True, True, True]
    env.close()


def test_tasks_follow_the_papers_distributions():
    directions = fixed_tasks(AntTasks("direction"), 3, "test", 0, 200)
    assert set(directions.flatten().tolist()) == {-1.0, 1.0}
    velocities = fixed_tasks(AntTasks("velocity"), 3, "test", 0, 200)
    assert velocities.min() >= 0 and velocities.max() <= 3 and velocities.max() > 2.5


def test_registered_environments_pass_gymnasiums_checker():
    from gymnasium.utils.env_checker import check_env

    for env_id in ("metagrad/AntDir-v0", "metagrad/AntVel-v0"):
        env = gymnasium.make(env_id)
        assert env.spec.max_episode_steps == 200
        assert env.observation_space.shape == (123,)
        check_env(env.unwrapped, skip_render_check=True)
        env.close()


def test_a_meta_iteration_runs_on_ant():
    env = AntTasks("direction", horizon=10)
    params = init_policy(123, 8, (8,), generator=torch.Generator().manual_seed(0))
    result = train_maml(env, 1, seed=0, meta_batch=2, rollouts=2, params=params)
    (metrics,) = result.history
    assert 0 < metrics.env_steps <= 2 * 2 * 10 * 2
    assert np.isfinite(metrics.pre_return) and np.isfinite(metrics.post_return)
    env.close()


def test_a_bad_kind_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="direction"):
        AntTasks("sideways")


def test_a_missing_extra_says_how_to_install_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "metagrad.rl.ant")
    monkeypatch.delitem(sys.modules, "metagrad.rl.locomotion")
    monkeypatch.setitem(sys.modules, "mujoco", None)
    with pytest.raises(ConfigError, match=r"pip install metagrad\[rl\]"):
        importlib.import_module("metagrad.rl.ant")
