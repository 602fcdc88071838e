"""Meta-RL locomotion on Gymnasium's MuJoCo environments: what HalfCheetah and Ant share.

`MetaMujocoEnv` is mixed into a Gymnasium MuJoCo environment (`HalfCheetah-v5`, `Ant-v5`) to
give it a task parameter `task`, one compiled model per process, and a bare step for batched
simulation. `LocomotionTasks` is the task environment meta-training uses: T tasks × R episodes
of such an environment, stepped together. Needs the `[rl]` extra (`pip install metagrad[rl]`).
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from metagrad.errors import ConfigError
from metagrad.rl.environment import Transition

try:
    import gymnasium
    import mujoco
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ConfigError(
        f"HalfCheetah and Ant need Gymnasium and MuJoCo ({error}); install them with "
        "`pip install metagrad[rl]`"
    ) from error

HORIZON = 200
"""The paper's episode length for its locomotion tasks."""
VECTORIZATIONS = ("threads", "sync", "async")


@cache
def _compiled(path: str) -> mujoco.MjModel:
    """The model, compiled once per process. Gymnasium's XML sets the total mass in the compiler,
    which MuJoCo ≥ 3.3 deprecates with a warning written to MUJOCO_LOG.TXT in the working
    directory; the mass is set on the compiled model instead, as MuJoCo advises (the same model,
    mass for mass)."""
    spec = mujoco.MjSpec.from_file(path)
    total_mass, spec.compiler.settotalmass = spec.compiler.settotalmass, -1
    model = spec.compile()
    if total_mass > 0:
        mujoco.mj_setTotalmass(model, total_mass)
        mujoco.mj_setConst(model, mujoco.MjData(model))
    return model


class MetaMujocoEnv:
    """Mixed in before a Gymnasium `MujocoEnv`. A subclass defines the observation (`_record`),
    the coordinate whose change per step is the velocity (`position`), the task's reward
    (`task_reward`), and the whole reward and the end of an episode for many episodes at once
    (`outcome`), as its Gymnasium `step` gives them."""

    observation_size: ClassVar[int]
    contact_forces: ClassVar[bool] = False
    """Whether the observation or the reward uses `data.cfrc_ext`, which MuJoCo computes in a
    pass of its own after the step (`mj_rnePostConstraint`): HalfCheetah skips it."""
    task: float

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        """A copy of one compiled model per process: a meta-batch makes hundreds of these
        environments, and compiling the XML for each costs time (and a MuJoCo warning each)."""
        model = copy.deepcopy(_compiled(self.fullpath))
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    @staticmethod
    def task_reward(task: Any, velocity: Any) -> Any:
        """The task's part of the reward, of floats or of arrays (one episode per element)."""
        raise NotImplementedError

    def position(self) -> float:
        raise NotImplementedError

    def _record(self, row: np.ndarray) -> None:
        """Write the observation into `row[:observation_size]`."""
        raise NotImplementedError

    def _get_obs(self) -> np.ndarray:
        row = np.empty(self.observation_size)
        self._record(row)
        return row

    @classmethod
    def outcome(
        cls, tasks: np.ndarray, velocity: np.ndarray, actions: np.ndarray, observations: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rewards, terminated) of a step of many episodes: what the environment's own `step`
        gives, from each episode's task, velocity, action and new observation."""
        raise NotImplementedError

    def outcome_of(
        self, observation: np.ndarray, velocity: float = 0.0, action: Any = 0.0
    ) -> tuple[float, bool]:
        """This environment's (reward, terminated) for one step, by `outcome`: its Gymnasium
        `step` and the batched simulation share one formula."""
        actions = np.broadcast_to(np.asarray(action, np.float64), (1, *self.action_space.shape))
        rewards, terminated = self.outcome(
            np.array([self.task]), np.array([velocity]), actions, observation[None]
        )
        return float(rewards[0]), bool(terminated[0])

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, float]]:
        reward, _ = self.outcome_of(self._get_obs(), x_velocity, action)
        return reward, {"reward_forward": self.task_reward(self.task, x_velocity)}

    def advance(self, action: np.ndarray, row: np.ndarray) -> None:
        """`MujocoEnv.do_simulation` (its force pass only if `contact_forces`), then the new
        observation and the position before and after the step into `row` (its last two
        entries)."""
        row[-2] = self.position()
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        if self.contact_forces:
            mujoco.mj_rnePostConstraint(self.model, self.data)
        self._record(row)
        row[-1] = self.position()


class LocomotionTasks:
    """The task distribution of `kind` and its batched simulation.

    Directions are ±1 with probability ½ each, target velocities uniform in [0, `max_velocity`]
    (the paper's distributions). All T·R episodes step together, in one of three ways, each
    giving the same episodes:

    - "threads" (default): the environments are reset by Gymnasium, then stepped on their MuJoCo
      data directly (`MetaMujocoEnv.advance`), split over a pool of threads, one per torch
      thread (MuJoCo releases the GIL while it steps). Gymnasium's per-step Python costs as
      much as the physics here;
    - "sync": one `gymnasium.vector.SyncVectorEnv` in this process;
    - "async": one process per episode (`AsyncVectorEnv`, started with `spawn`), worth it only
      with many cores and few episodes.
    """

    observation_size: ClassVar[int]
    action_size: ClassVar[int]
    max_velocity: ClassVar[float]
    env_ids: ClassVar[dict[str, str]]
    """The Gymnasium id of each kind of task."""
    env_classes: ClassVar[dict[str, type[MetaMujocoEnv]]]

    def __init__(
        self,
        kind: Literal["direction", "velocity"] = "direction",
        horizon: int = HORIZON,
        vectorization: Literal["threads", "sync", "async"] = "threads",
    ) -> None:
        if kind not in self.env_ids:
            raise ConfigError(
                f"{type(self).__name__} task kind must be one of {sorted(self.env_ids)}, "
                f"got {kind!r}"
            )
        if vectorization not in VECTORIZATIONS:
            raise ConfigError(
                f"vectorization must be one of {', '.join(map(repr, VECTORIZATIONS))}, "
                f"got {vectorization!r}"
            )
        self.kind, self.horizon, self.vectorization = kind, horizon, vectorization
        self._vector: gymnasium.vector.VectorEnv | None = None
        self._envs: list[MetaMujocoEnv] = []
        self._pool: ThreadPoolExecutor | None = None
        self._workers = torch.get_num_threads()

    def sample_tasks(
        self, generator: torch.Generator, num_tasks: int, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        unit = torch.rand(num_tasks, 1, generator=generator, dtype=torch.float64)
        if self.kind == "direction":
            tasks = torch.where(unit < 0.5, -1.0, 1.0)
        else:
            tasks = self.max_velocity * unit
        return tasks.to(dtype)

    def _vector_env(self, size: int) -> gymnasium.vector.VectorEnv:
        if self._vector is None or self._vector.num_envs != size:
            self.close()
            # "module:id" makes a spawned worker import the module, which registers the id.
            module = self.env_classes[self.kind].__module__
            make = [
                partial(
                    gymnasium.make,
                    f"{module}:{self.env_ids[self.kind]}",
                    max_episode_steps=self.horizon,
                    disable_env_checker=True,
                )
            ] * size
            if self.vectorization == "sync":
                self._vector = gymnasium.vector.SyncVectorEnv(make)
            else:
                self._vector = gymnasium.vector.AsyncVectorEnv(make, context="spawn")
        return self._vector

    def _threaded_envs(self, size: int) -> tuple[list[MetaMujocoEnv], ThreadPoolExecutor]:
        if len(self._envs) != size:
            self.close()
            self._envs = [self.env_classes[self.kind]() for _ in range(size)]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers)
        return self._envs, self._pool

    def simulate(
        self,
        tasks: torch.Tensor,
        rollouts: int,
        generator: torch.Generator | None = None,
        part: slice = slice(None),
    ) -> _VectorSimulation | _ThreadedSimulation:
        share = range(tasks.shape[0])[part]
        task_values = tasks[part, 0].double().repeat_interleave(rollouts)
        seeds = torch.randint(2**31 - 1, (tasks.shape[0] * rollouts,), generator=generator)
        episodes = seeds[share.start * rollouts : share.stop * rollouts].tolist()
        if self.vectorization == "threads":
            envs, pool = self._threaded_envs(len(episodes))
            first = []
            for env, task, seed in zip(envs, task_values.tolist(), episodes, strict=True):
                env.task = task
                first.append(env.reset(seed=seed)[0])
            return _ThreadedSimulation(
                envs, pool, self._workers, task_values.numpy(), len(share), np.stack(first)
            )
        vector = self._vector_env(len(episodes))
        vector.set_attr("task", task_values.tolist())
        observations, _ = vector.reset(seed=episodes)
        return _VectorSimulation(vector, len(share), observations)

    def close(self) -> None:
        if self._vector is not None:
            self._vector.close()
            self._vector = None
        for env in self._envs:
            env.close()
        self._envs = []
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def register(env_ids: dict[str, str], env_classes: dict[str, type]) -> None:
    """Register each kind's environment with Gymnasium, horizon 200 as in the paper."""
    for kind, env_class in env_classes.items():
        if env_ids[kind] not in gymnasium.registry:
            entry = f"{env_class.__module__}:{env_class.__name__}"
            gymnasium.register(env_ids[kind], entry_point=entry, max_episode_steps=HORIZON)


def _shaped(values: np.ndarray, tasks: int) -> torch.Tensor:
    """`[T·R, …]` → `[T, R, …]`."""
    return torch.from_numpy(np.asarray(values)).reshape(tasks, -1, *values.shape[1:])


def _clipped(actions: torch.Tensor) -> np.ndarray:
    """The actions clipped to the action space (±1), as the simulator clips the torque, so the
    control cost is paid on the torque applied; `[T·R, act]`."""
    return actions.reshape(-1, actions.shape[-1]).clamp(-1, 1).double().numpy()


class _VectorSimulation:
    def __init__(self, vector: gymnasium.vector.VectorEnv, tasks: int, first: np.ndarray) -> None:
        self.vector, self.tasks, self.first = vector, tasks, first

    def observe(self) -> torch.Tensor:
        return _shaped(self.first, self.tasks)

    def step(self, actions: torch.Tensor, alive: torch.Tensor) -> Transition:
        observations, rewards, terminated, _, _ = self.vector.step(_clipped(actions))
        rewards = _shaped(rewards, self.tasks) * alive
        return Transition(
            _shaped(observations, self.tasks), rewards, _shaped(terminated, self.tasks).bool()
        )


class _ThreadedSimulation:
    """The environments' own step, done on their MuJoCo data (`MetaMujocoEnv.advance`), with
    the reward and the end of each episode computed for all episodes at once (`outcome`). An
    episode that has ended goes on being stepped, its steps masked, where Gymnasium's vector
    environment would reset it."""

    def __init__(
        self,
        envs: list[MetaMujocoEnv],
        pool: ThreadPoolExecutor,
        workers: int,
        task_values: np.ndarray,
        tasks: int,
        first: np.ndarray,
    ) -> None:
        self.envs, self.pool, self.workers = envs, pool, workers
        self.task_values, self.tasks = task_values, tasks
        self.first = first

    def observe(self) -> torch.Tensor:
        return _shaped(self.first, self.tasks)

    def _advance(self, indices: np.ndarray, actions: np.ndarray, rows: np.ndarray) -> None:
        for i in indices:
            self.envs[i].advance(actions[i], rows[i])

    def step(self, actions: torch.Tensor, alive: torch.Tensor) -> Transition:
        clipped = _clipped(actions)
        env = self.envs[0]
        rows = np.empty((len(self.envs), env.observation_size + 2))
        chunks = np.array_split(np.arange(len(self.envs)), self.workers)
        list(self.pool.map(self._advance, chunks, [clipped] * len(chunks), [rows] * len(chunks)))
        observations = rows[:, :-2]
        velocity = (rows[:, -1] - rows[:, -2]) / env.dt
        rewards, terminated = env.outcome(self.task_values, velocity, clipped, observations)
        return Transition(
            _shaped(observations, self.tasks),
            _shaped(rewards, self.tasks) * alive,
            _shaped(terminated, self.tasks),
        )
