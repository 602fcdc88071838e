"""HalfCheetah direction and velocity tasks against Gymnasium's own HalfCheetah-v5.

The reference is the stock environment, stepped with the same seeds and actions; the meta-RL
observation and the task rewards are computed here from its MuJoCo state.
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
from metagrad.rl.cheetah import HalfCheetahTasks  # noqa: E402
from metagrad.rl.locomotion import _compiled  # noqa: E402


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """The stock model warns into MUJOCO_LOG.TXT in the working directory."""
    monkeypatch.chdir(tmp_path)


def reference_steps(seed, actions, task_reward):
    """Observations and rewards of one stock HalfCheetah-v5 episode, with the meta-RL observation
    (qpos[1:], qvel, the torso's position) and the reward task_reward(v) − 0.05‖a‖²."""
    env = gymnasium.make("HalfCheetah-v5").unwrapped
    env.reset(seed=seed)

    def observe():
        data = env.data
        return np.concatenate([data.qpos[1:], data.qvel, data.body("torso").xpos])

    observations, rewards = [observe()], []
    for action in actions:
        clipped = np.clip(action, -1, 1)
        before = env.data.qpos[0]
        env.step(clipped)
        velocity = (env.data.qpos[0] - before) / env.dt
        observations.append(observe())
        rewards.append(task_reward(velocity) - 0.05 * np.sum(clipped**2))
    env.close()
    return np.stack(observations), np.array(rewards)


@pytest.mark.parametrize(
    ("kind", "tasks", "task_reward"),
    [
        ("direction", [1.0, -1.0], lambda task, v: task * v),
        ("velocity", [0.3, 1.7], lambda task, v: -abs(v - task)),
    ],
)
def test_batched_episodes_equal_the_stock_environment(kind, tasks, task_reward):
    env = HalfCheetahTasks(kind, horizon=6)
    rollouts, steps = 2, 6
    task_tensor = torch.tensor(tasks, dtype=torch.float64)[:, None]
    simulation = env.simulate(task_tensor, rollouts, torch.Generator().manual_seed(4))
    # The episodes are seeded with integers drawn from the generator, one per episode.
    seeds = torch.randint(
        2**31 - 1, (len(tasks) * rollouts,), generator=torch.Generator().manual_seed(4)
    )
    actions = 1.5 * torch.randn(steps, len(tasks), rollouts, 6, dtype=torch.float64)
    alive = torch.ones(len(tasks), rollouts, dtype=torch.float64)
    observations, rewards = [simulation.observe()], []
    for action in actions:
        step = simulation.step(action, alive)
        observations.append(step.observations)
        rewards.append(step.rewards)
        assert not step.done.any()
    observations, rewards = torch.stack(observations, 2), torch.stack(rewards, 2)
    assert observations.shape == (len(tasks), rollouts, steps + 1, 20)
    for t, task in enumerate(tasks):
        for r in range(rollouts):
            expected_obs, expected_rewards = reference_steps(
                int(seeds[t * rollouts + r]),
                actions[:, t, r].numpy(),
                lambda v, task=task: task_reward(task, v),
            )
            np.testing.assert_allclose(observations[t, r].numpy(), expected_obs, atol=1e-12)
            np.testing.assert_allclose(rewards[t, r].numpy(), expected_rewards, atol=1e-12)
    env.close()


def test_no_log_file_is_left_in_the_working_directory(tmp_path):
    _compiled.cache_clear()
    env = HalfCheetahTasks("velocity", horizon=2)
    env.simulate(torch.ones(1, 1), 1).step(torch.zeros(1, 1, 6), torch.ones(1, 1))
    env.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_gymnasiums_vector_environments_give_the_same_episodes(vectorization):
    """The default steps MuJoCo directly in threads; `sync` and `async` (each episode in a
    spawned process, which registers the ids itself) are Gymnasium's vector environments."""
    tasks = torch.tensor([[0.5], [1.5], [0.2]], dtype=torch.float64)
    rollouts = 3 if vectorization == "sync" else 1  # a process per episode is slow to start
    actions = 2 * torch.randn(8, 3, rollouts, 6, dtype=torch.float64)
    results = []
    for name in ("threads", vectorization):
        env = HalfCheetahTasks("velocity", horizon=8, vectorization=name)
        simulation = env.simulate(tasks, rollouts, torch.Generator().manual_seed(2))
        alive = torch.ones(3, rollouts, dtype=torch.float64)
        steps = [simulation.step(action, alive) for action in actions]
        results.append((simulation.observe(), [(s.observations, s.rewards) for s in steps]))
        env.close()
    (first, threads), (first_other, other) = results
    assert torch.equal(first, first_other)
    for (obs, rewards), (obs_other, rewards_other) in zip(threads, other, strict=True):
        assert torch.equal(obs, obs_other) and torch.equal(rewards, rewards_other)


def test_ended_episodes_earn_nothing():
    env = HalfCheetahTasks("direction", horizon=3)
    simulation = env.simulate(torch.ones(1, 1, dtype=torch.float64), 2)
    alive = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    step = simulation.step(torch.ones(1, 2, 6, dtype=torch.float64), alive)
    assert step.rewards[0, 1] == 0 and step.rewards[0, 0] != 0
    env.close()


def test_tasks_follow_the_papers_distributions_and_are_fixed_by_seed_split_and_index():
    directions = fixed_tasks(HalfCheetahTasks("direction"), 3, "test", 0, 200)
    assert set(directions.flatten().tolist()) == {-1.0, 1.0}
    assert 60 < (directions > 0).sum() < 140
    velocities = fixed_tasks(HalfCheetahTasks("velocity"), 3, "test", 0, 200)
    assert velocities.shape == (200, 1)
    assert velocities.min() >= 0 and velocities.max() <= 2 and velocities.std() > 0.4
    again = fixed_tasks(HalfCheetahTasks("velocity"), 3, "test", 0, 200)
    assert torch.equal(velocities, again)
    assert not torch.equal(
        velocities, fixed_tasks(HalfCheetahTasks("velocity"), 3, "train", 0, 200)
    )


def test_registered_environments_pass_gymnasiums_checker():
    from gymnasium.utils.env_checker import check_env

    for env_id in ("metagrad/HalfCheetahDir-v0", "metagrad/HalfCheetahVel-v0"):
        env = gymnasium.make(env_id)
        assert env.spec.max_episode_steps == 200
        assert env.observation_space.shape == (20,)
        check_env(env.unwrapped, skip_render_check=True)
        env.close()


def test_a_meta_iteration_runs_on_halfcheetah():
    env = HalfCheetahTasks("velocity", horizon=10)
    params = init_policy(20, 6, (8,), generator=torch.Generator().manual_seed(0))
    before = {name: value.clone() for name, value in params.items()}
    result = train_maml(env, 1, seed=0, meta_batch=2, rollouts=2, params=params)
    (metrics,) = result.history
    assert metrics.env_steps == 2 * 2 * 10 * 2  # tasks × episodes × horizon × (support + query)
    assert np.isfinite(metrics.pre_return) and np.isfinite(metrics.post_return)
    assert any(
        not torch.equal(a, b) for a, b in zip(before.values(), result.params.values(), strict=True)
    )
    env.close()


def test_bad_settings_are_refused_with_the_choices():
    with pytest.raises(ConfigError, match="direction"):
        HalfCheetahTasks("sideways")
    with pytest.raises(ConfigError, match="'threads', 'sync', 'async'"):
        HalfCheetahTasks("direction", vectorization="processes")


def test_a_missing_extra_says_how_to_install_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "metagrad.rl.cheetah")
    monkeypatch.delitem(sys.modules, "metagrad.rl.locomotion")
    monkeypatch.setitem(sys.modules, "mujoco", None)
    with pytest.raises(ConfigError, match=r"pip install metagrad\[rl\]"):
        importlib.import_module("metagrad.rl.cheetah")


def test_a_part_of_the_tasks_starts_from_the_states_of_the_whole_meta_batch():
    env = HalfCheetahTasks("velocity", horizon=3)
    tasks = torch.tensor([[0.3], [1.1], [1.7]], dtype=torch.float64)
    whole = env.simulate(tasks, 2, torch.Generator().manual_seed(5)).observe()
    part = env.simulate(tasks, 2, torch.Generator().manual_seed(5), slice(1, 3)).observe()
    assert part.shape == (2, 2, 20)
    torch.testing.assert_close(part, whole[1:3])
    assert not torch.equal(whole[0], whole[1])
    env.close()
