"""HalfCheetah direction and velocity tasks (Finn et al. 2017, §5.3), on Gymnasium and MuJoCo.

Two subclasses of Gymnasium's `HalfCheetah-v5` with the meta-RL observation of rllab, the
original MAML code and pytorch-maml-rl: qpos[1:], qvel and the torso's position
(`get_body_com("torso")`; 20 numbers), and the task's reward with a control cost of 0.05‖a‖²:

- `metagrad/HalfCheetahDir-v0`: dir · v, the direction +1 (forward) or −1 (backward);
- `metagrad/HalfCheetahVel-v0`: −|v − v*|, the target velocity v* uniform in [0, 2].

v is the forward velocity of the root over one step (5 MuJoCo frames of 0.01 s). Both are
registered with Gymnasium on import, horizon 200 as in the paper. `HalfCheetahTasks` is the task
environment meta-training uses: T tasks × R episodes stepped together. Needs the `[rl]` extra
(`pip install metagrad[rl]`).
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from typing import Any, Literal

import numpy as np
import torch

from metagrad.errors import ConfigError
from metagrad.rl.environment import Transition

try:
    import gymnasium
    import mujoco
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
    from gymnasium.spaces import Box
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ConfigError(
        f"HalfCheetah needs Gymnasium and MuJoCo ({error}); install them with "
        "`pip install metagrad[rl]`"
    ) from error

HORIZON = 200
CONTROL_COST = 0.05


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


class _MetaHalfCheetah(HalfCheetahEnv):
    """HalfCheetah-v5 with the 20-d meta-RL observation and a task parameter `task`."""

    def __init__(self, task: float, **kwargs: Any) -> None:
        kwargs.setdefault("ctrl_cost_weight", CONTROL_COST)
        super().__init__(**kwargs)
        self.task = float(task)
        self.observation_space = Box(-np.inf, np.inf, (20,), np.float64)
        gymnasium.utils.EzPickle.__init__(self, task, **kwargs)

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        """A copy of one compiled model per process: a meta-batch makes hundreds of these
        environments, and compiling the XML for each costs time (and a MuJoCo warning each)."""
        model = copy.deepcopy(_compiled(self.fullpath))
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    def _get_obs(self) -> np.ndarray:
        return np.concatenate(
            [self.data.qpos.flat[1:], self.data.qvel.flat, self.get_body_com("torso").flat]
        )

    @staticmethod
    def task_reward(task: Any, x_velocity: Any) -> Any:
        """The task's part of the reward, of floats or of arrays (one episode per element)."""
        raise NotImplementedError

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, float]]:
        forward = self.task_reward(self.task, x_velocity)
        control = self.control_cost(action)
        return forward - control, {"reward_forward": forward, "reward_ctrl": -control}


class HalfCheetahDir(_MetaHalfCheetah):
    """Run forward (`task` = +1) or backward (−1): reward dir · v − 0.05‖a‖²."""

    def __init__(self, task: float = 1.0, **kwargs: Any) -> None:
        super().__init__(task, **kwargs)

    @staticmethod
    def task_reward(task: Any, x_velocity: Any) -> Any:
        return task * x_velocity


class HalfCheetahVel(_MetaHalfCheetah):
    """Run at the target velocity `task`: reward −|v − v*| − 0.05‖a‖²."""

    def __init__(self, task: float = 1.0, **kwargs: Any) -> None:
        super().__init__(task, **kwargs)

    @staticmethod
    def task_reward(task: Any, x_velocity: Any) -> Any:
        return -abs(x_velocity - task)


ENV_IDS = {"direction": "metagrad/HalfCheetahDir-v0", "velocity": "metagrad/HalfCheetahVel-v0"}
ENV_CLASSES: dict[str, type[_MetaHalfCheetah]] = {
    "direction": HalfCheetahDir,
    "velocity": HalfCheetahVel,
}
VECTORIZATIONS = ("threads", "sync", "async")
for _id, _entry in zip(ENV_IDS.values(), ("HalfCheetahDir", "HalfCheetahVel"), strict=True):
    if _id not in gymnasium.registry:
        gymnasium.register(_id, entry_point=f"{__name__}:{_entry}", max_episode_steps=HORIZON)


class HalfCheetahTasks:
    """The task distribution of `kind` and its batched simulation.

    Directions are ±1 with probability ½ each, target velocities uniform in [0, 2] (the paper's
    distributions). All T·R episodes step together, in one of three ways, each giving the same
    episodes:

    - "threads" (default): the environments are reset by Gymnasium, then stepped on their MuJoCo
      data directly, split over a pool of threads, one per torch thread (MuJoCo releases the
      GIL while it steps). Gymnasium's per-step Python costs as much as the physics here;
    - "sync": one `gymnasium.vector.SyncVectorEnv` in this process;
    - "async": one process per episode (`AsyncVectorEnv`, started with `spawn`), worth it only
      with many cores and few episodes.
    """

    observation_size = 20
    action_size = 6

    def __init__(
        self,
        kind: Literal["direction", "velocity"] = "direction",
        horizon: int = HORIZON,
        vectorization: Literal["threads", "sync", "async"] = "threads",
    ) -> None:
        if kind not in ENV_IDS:
            raise ConfigError(
                f"HalfCheetah task kind must be one of {sorted(ENV_IDS)}, got {kind!r}"
            )
        if vectorization not in VECTORIZATIONS:
            raise ConfigError(
                f"vectorization must be one of {', '.join(map(repr, VECTORIZATIONS))}, "
                f"got {vectorization!r}"
            )
        self.kind, self.horizon, self.vectorization = kind, horizon, vectorization
        self._vector: gymnasium.vector.VectorEnv | None = None
        self._envs: list[_MetaHalfCheetah] = []
        self._pool: ThreadPoolExecutor | None = None
        self._workers = torch.get_num_threads()

    def sample_tasks(
        self, generator: torch.Generator, num_tasks: int, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        unit = torch.rand(num_tasks, 1, generator=generator, dtype=torch.float64)
        tasks = torch.where(unit < 0.5, -1.0, 1.0) if self.kind == "direction" else 2 * unit
        return tasks.to(dtype)

    def _vector_env(self, size: int) -> gymnasium.vector.VectorEnv:
        if self._vector is None or self._vector.num_envs != size:
            self.close()
            # "module:id" makes a spawned worker import this module, which registers the id.
            make = [
                partial(
                    gymnasium.make,
                    f"{__name__}:{ENV_IDS[self.kind]}",
                    max_episode_steps=self.horizon,
                    disable_env_checker=True,
                )
            ] * size
            if self.vectorization == "sync":
                self._vector = gymnasium.vector.SyncVectorEnv(make)
            else:
                self._vector = gymnasium.vector.AsyncVectorEnv(make, context="spawn")
        return self._vector

    def _threaded_envs(self, size: int) -> tuple[list[_MetaHalfCheetah], ThreadPoolExecutor]:
        if len(self._envs) != size:
            self.close()
            self._envs = [ENV_CLASSES[self.kind]() for _ in range(size)]
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


def _shaped(values: np.ndarray, tasks: int) -> torch.Tensor:
    """`[T·R, …]` → `[T, R, …]`."""
    return torch.from_numpy(np.asarray(values)).reshape(tasks, -1, *values.shape[1:])


def _clipped(actions: torch.Tensor) -> np.ndarray:
    """The actions clipped to the action space (±1), as the simulator clips the torque, so the
    control cost is paid on the torque applied; `[T·R, 6]`."""
    return actions.reshape(-1, actions.shape[-1]).clamp(-1, 1).double().numpy()


class _VectorSimulation:
    def __init__(self, vector: gymnasium.vector.VectorEnv, tasks: int, first: np.ndarray) -> None:
        self.vector, self.tasks, self.first = vector, tasks, first

    def observe(self) -> torch.Tensor:
        return _shaped(self.first, self.tasks)

    def step(self, actions: torch.Tensor, alive: torch.Tensor) -> Transition:
        """HalfCheetah never ends early."""
        observations, rewards, terminated, _, _ = self.vector.step(_clipped(actions))
        rewards = _shaped(rewards, self.tasks) * alive
        return Transition(
            _shaped(observations, self.tasks), rewards, _shaped(terminated, self.tasks).bool()
        )


class _ThreadedSimulation:
    """The environments' own step, done on their MuJoCo data (`MujocoEnv.do_simulation`
    without its post-step force computation, which the observation and reward do not use),
    with the observation and the reward computed for all episodes at once."""

    def __init__(
        self,
        envs: list[_MetaHalfCheetah],
        pool: ThreadPoolExecutor,
        workers: int,
        task_values: np.ndarray,
        tasks: int,
        first: np.ndarray,
    ) -> None:
        self.envs, self.pool, self.workers = envs, pool, workers
        self.task_values, self.tasks = task_values, tasks
        self.first = first
        self.torso = envs[0].model.body("torso").id

    def observe(self) -> torch.Tensor:
        return _shaped(self.first, self.tasks)

    def _advance(self, indices: np.ndarray, actions: np.ndarray, out: np.ndarray) -> None:
        """Step the environments `indices`; `out[i]` = [observation, x before, x after]."""
        for i in indices:
            env = self.envs[i]
            data = env.data
            out[i, 20] = data.qpos[0]
            data.ctrl[:] = actions[i]
            mujoco.mj_step(env.model, data, nstep=env.frame_skip)
            out[i, :8] = data.qpos[1:]
            out[i, 8:17] = data.qvel
            out[i, 17:20] = data.xpos[self.torso]
            out[i, 21] = data.qpos[0]

    def step(self, actions: torch.Tensor, alive: torch.Tensor) -> Transition:
        """HalfCheetah never ends early."""
        clipped = _clipped(actions)
        out = np.empty((len(self.envs), 22))
        chunks = np.array_split(np.arange(len(self.envs)), self.workers)
        list(self.pool.map(self._advance, chunks, [clipped] * len(chunks), [out] * len(chunks)))
        env = self.envs[0]
        velocity = (out[:, 21] - out[:, 20]) / env.dt
        control = env._ctrl_cost_weight * np.sum(np.square(clipped), axis=-1)
        rewards = env.task_reward(self.task_values, velocity) - control
        done = torch.zeros(self.tasks, len(self.envs) // self.tasks, dtype=torch.bool)
        return Transition(
            _shaped(out[:, :20], self.tasks), _shaped(rewards, self.tasks) * alive, done
        )
