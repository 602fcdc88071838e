"""Ant direction and velocity tasks (Finn et al. 2017, §5.3), on Gymnasium and MuJoCo.

Two subclasses of Gymnasium's `Ant-v5` with the meta-RL observation and rewards of rllab's ant,
the original MAML code and pytorch-maml-rl. The observation is qpos[2:], qvel, the external
contact forces of every body clipped to ±1, the torso's orientation matrix and position (123
numbers). The reward is the task's part, plus 0.05 for staying alive, minus a control cost of
0.005‖a‖² and a contact cost of 0.0005‖clip(f)‖²:

- `metagrad/AntDir-v0`: dir · v, the direction +1 (forward) or −1 (backward);
- `metagrad/AntVel-v0`: −|v − v*| + 1, the target velocity v* uniform in [0, 3].

v is the torso's forward velocity over one step (5 MuJoCo frames of 0.01 s). An episode ends
when the state is not finite or the torso's height leaves [0.2, 1]. Both are registered with
Gymnasium on import, horizon 200 as in the paper. Needs the `[rl]` extra
(`pip install metagrad[rl]`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from metagrad.errors import ConfigError
from metagrad.rl.locomotion import HORIZON, LocomotionTasks, MetaMujocoEnv, register

try:
    import gymnasium
    from gymnasium.envs.mujoco.ant_v5 import AntEnv
    from gymnasium.spaces import Box
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ConfigError(
        f"Ant needs Gymnasium and MuJoCo ({error}); install them with `pip install metagrad[rl]`"
    ) from error

__all__ = ["HORIZON", "AntDir", "AntTasks", "AntVel"]

SURVIVE_REWARD = 0.05
CONTROL_COST = 0.5 * 1e-2
CONTACT_COST = 0.5 * 1e-3
HEALTHY_HEIGHT = (0.2, 1.0)
CONTACTS = slice(27, 111)
"""Where the clipped contact forces are in the observation."""


class _MetaAnt(MetaMujocoEnv, AntEnv):
    """Ant-v5 with the 123-d meta-RL observation, its reward and a task parameter `task`."""

    observation_size = 123
    contact_forces = True

    def __init__(self, task: float, **kwargs: Any) -> None:
        kwargs.setdefault("ctrl_cost_weight", CONTROL_COST)  # Gymnasium's, as `outcome` has it
        kwargs.setdefault("contact_cost_weight", CONTACT_COST)
        super().__init__(**kwargs)
        self.task = float(task)
        self.observation_space = Box(-np.inf, np.inf, (123,), np.float64)
        self._torso = self.model.body("torso").id
        gymnasium.utils.EzPickle.__init__(self, task, **kwargs)

    def position(self) -> float:
        return self.data.xpos[self._torso, 0]

    def _record(self, row: np.ndarray) -> None:
        data = self.data
        row[:13] = data.qpos[2:]
        row[13:27] = data.qvel
        row[CONTACTS] = np.clip(data.cfrc_ext, -1, 1).reshape(-1)
        row[111:120] = data.xmat[self._torso]
        row[120:123] = data.xpos[self._torso]

    @property
    def is_healthy(self) -> bool:
        return not self.outcome_of(self._get_obs())[1]

    @classmethod
    def outcome(
        cls, tasks: np.ndarray, velocity: np.ndarray, actions: np.ndarray, observations: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        control = CONTROL_COST * np.sum(np.square(actions), axis=-1)
        contact = CONTACT_COST * np.sum(np.square(observations[:, CONTACTS]), axis=-1)
        rewards = cls.task_reward(tasks, velocity) + SURVIVE_REWARD - control - contact
        height = observations[:, 0]
        healthy = np.isfinite(observations).all(-1)
        healthy &= (HEALTHY_HEIGHT[0] <= height) & (height <= HEALTHY_HEIGHT[1])
        return rewards, ~healthy


class AntDir(_MetaAnt):
    """Run forward (`task` = +1) or backward (−1): dir · v + 0.05 − costs."""

    def __init__(self, task: float = 1.0, **kwargs: Any) -> None:
        super().__init__(task, **kwargs)

    @staticmethod
    def task_reward(task: Any, velocity: Any) -> Any:
        return task * velocity


class AntVel(_MetaAnt):
    """Run at the target velocity `task`: −|v − v*| + 1 + 0.05 − costs."""

    def __init__(self, task: float = 1.0, **kwargs: Any) -> None:
        super().__init__(task, **kwargs)

    @staticmethod
    def task_reward(task: Any, velocity: Any) -> Any:
        return -abs(velocity - task) + 1.0


class AntTasks(LocomotionTasks):
    """Ant's task distributions: directions ±1, target velocities uniform in [0, 3]."""

    observation_size = 123
    action_size = 8
    max_velocity = 3.0
    env_ids: ClassVar[dict[str, str]] = {
        "direction": "metagrad/AntDir-v0",
        "velocity": "metagrad/AntVel-v0",
    }
    env_classes: ClassVar[dict[str, type[MetaMujocoEnv]]] = {
        "direction": AntDir,
        "velocity": AntVel,
    }


register(AntTasks.env_ids, AntTasks.env_classes)
