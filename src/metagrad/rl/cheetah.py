"""HalfCheetah direction and velocity tasks (Finn et al. 2017, §5.3), on Gymnasium and MuJoCo.

Two subclasses of Gymnasium's `HalfCheetah-v5` with the meta-RL observation of rllab, the
original MAML code and pytorch-maml-rl: qpos[1:], qvel and the torso's position
(`get_body_com("torso")`; 20 numbers), and the task's reward with a control cost of 0.05‖a‖²:

- `metagrad/HalfCheetahDir-v0`: dir · v, the direction +1 (forward) or −1 (backward);
- `metagrad/HalfCheetahVel-v0`: −|v − v*|, the target velocity v* uniform in [0, 2].

v is the forward velocity of the root over one step (5 MuJoCo frames of 0.01 s). Both are
registered with Gymnasium on import, horizon 200 as in the paper. `HalfCheetahTasks` is the task
environment meta-training uses (`metagrad.rl.locomotion.LocomotionTasks`). Needs the `[rl]`
extra (`pip install metagrad[rl]`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from metagrad.errors import ConfigError
from metagrad.rl.locomotion import HORIZON, LocomotionTasks, MetaMujocoEnv, register

try:
    import gymnasium
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
    from gymnasium.spaces import Box
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ConfigError(
        f"HalfCheetah needs Gymnasium and MuJoCo ({error}); install them with "
        "`pip install metagrad[rl]`"
    ) from error

__all__ = ["HORIZON", "HalfCheetahDir", "HalfCheetahTasks", "HalfCheetahVel"]

CONTROL_COST = 0.05


class _MetaHalfCheetah(MetaMujocoEnv, HalfCheetahEnv):
    """HalfCheetah-v5 with the 20-d meta-RL observation and a task parameter `task`."""

    observation_size = 20

    def __init__(self, task: float, **kwargs: Any) -> None:
        kwargs.setdefault("ctrl_cost_weight", CONTROL_COST)  # Gymnasium's, as `outcome` has it
        super().__init__(**kwargs)
        self.task = float(task)
        self.observation_space = Box(-np.inf, np.inf, (20,), np.float64)
        self._torso = self.model.body("torso").id
        gymnasium.utils.EzPickle.__init__(self, task, **kwargs)

    def position(self) -> float:
        return self.data.qpos[0]

    def _get_rew(self, x_velocity: float, action: np.ndarray) -> tuple[float, dict[str, float]]:
        """`outcome`'s reward for one episode, without its arrays (Gymnasium's step)."""
        forward = self.task_reward(self.task, x_velocity)
        control = self.control_cost(action)
        return forward - control, {"reward_forward": forward, "reward_ctrl": -control}

    def _record(self, row: np.ndarray) -> None:
        row[:8] = self.data.qpos[1:]
        row[8:17] = self.data.qvel
        row[17:20] = self.data.xpos[self._torso]

    @classmethod
    def outcome(
        cls, tasks: np.ndarray, velocity: np.ndarray, actions: np.ndarray, observations: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """HalfCheetah never ends early."""
        control = CONTROL_COST * np.sum(np.square(actions), axis=-1)
        return cls.task_reward(tasks, velocity) - control, np.zeros(len(tasks), dtype=bool)


class HalfCheetahDir(_MetaHalfCheetah):
    """Run forward (`task` = +1) or backward (−1): reward dir · v − 0.05‖a‖²."""

    def __init__(self, task: float = 1.0, **kwargs: Any) -> None:
        super().__init__(task, **kwargs)

    @staticmethod
    def task_reward(task: Any, velocity: Any) -> Any:
        return task * velocity


class HalfCheetahVel(_MetaHalfCheetah):
    """Run at the target velocity `task`: reward −|v − v*| − 0.05‖a‖²."""

    def __init__(self, task: float = 1.0, **kwargs: Any) -> None:
        super().__init__(task, **kwargs)

    @staticmethod
    def task_reward(task: Any, velocity: Any) -> Any:
        return -abs(velocity - task)


class HalfCheetahTasks(LocomotionTasks):
    """HalfCheetah's task distributions: directions ±1, target velocities uniform in [0, 2]."""

    observation_size = 20
    action_size = 6
    max_velocity = 2.0
    env_ids: ClassVar[dict[str, str]] = {
        "direction": "metagrad/HalfCheetahDir-v0",
        "velocity": "metagrad/HalfCheetahVel-v0",
    }
    env_classes: ClassVar[dict[str, type[MetaMujocoEnv]]] = {
        "direction": HalfCheetahDir,
        "velocity": HalfCheetahVel,
    }


register(HalfCheetahTasks.env_ids, HalfCheetahTasks.env_classes)
