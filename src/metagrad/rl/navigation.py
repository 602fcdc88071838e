"""2D navigation (Finn et al. 2017, §5.3): a point moves to a goal it can't see.

Every task has its own goal; all tasks and all their rollouts step together as one tensor
operation, `[tasks, rollouts, 2]`, so sampling costs one policy forward pass per time step for
the whole meta-batch.

The dynamics follow the original MAML code (`PointEnvRandGoal`) and pytorch-maml-rl's
`Navigation2DEnv`: the action is clipped to ±0.1 per coordinate, added to the position, and the
reward is minus the Euclidean distance to the goal *after* the move. An episode ends after
`horizon` steps, or earlier when both coordinates are within `goal_radius` of the goal (the
paper's "within 0.01 of the goal"); the step that reaches the goal still earns its reward.
The original code also wraps the environment in rllab's `normalize`, which rescales a policy
output in [−1, 1] to ±0.1 (`normalized_actions=True`, as the navigation presets); by default, as
in pytorch-maml-rl, the raw action is clipped instead. The scale matters: a policy whose σ
starts at 1 explores with steps of σ = 0.1 in the normalised space, while its raw actions are
nearly all clipped to ±0.1, and it cannot stop at a goal until TRPO has shrunk σ tenfold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from metagrad.rl.environment import Transition


class Step(NamedTuple):
    positions: torch.Tensor
    """Positions after the move, `[T, R, 2]`."""
    rewards: torch.Tensor
    """−‖position − goal‖ after the move, `[T, R]`; 0 where the episode had already ended."""
    done: torch.Tensor
    """Whether the episode has ended by the end of this step (reached the goal), `[T, R]`."""


@dataclass(frozen=True)
class Navigation2D:
    """The task distribution and the batched dynamics; holds no state of its own."""

    horizon: int = 100
    max_action: float = 0.1
    goal_low: float = -0.5
    goal_high: float = 0.5
    goal_radius: float | None = 0.01
    """An episode ends once |x − gx| and |y − gy| are both below it; None: never before the
    horizon."""
    normalized_actions: bool = False
    """The policy acts in [−1, 1]², scaled to ±`max_action` (rllab's `normalize`, as the
    original MAML code); False: the raw action is clipped to ±`max_action`."""

    observation_size: int = 2
    action_size: int = 2

    def sample_tasks(
        self, generator: torch.Generator, num_tasks: int, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """`num_tasks` goals, uniform in [low, high]², `[T, 2]`."""
        unit = torch.rand(num_tasks, 2, generator=generator, dtype=torch.float64)
        return (self.goal_low + (self.goal_high - self.goal_low) * unit).to(dtype)

    def simulate(
        self,
        tasks: torch.Tensor,
        rollouts: int,
        generator: torch.Generator | None = None,
        part: slice = slice(None),
    ) -> _Simulation:
        """Every episode starts at the origin (the generator is not needed)."""
        return _Simulation(self, tasks[part], self.reset(tasks[part], rollouts))

    def reset(self, goals: torch.Tensor, rollouts: int) -> torch.Tensor:
        """Start positions (the origin) for `rollouts` episodes of every task, `[T, R, 2]`."""
        return goals.new_zeros(goals.shape[0], rollouts, 2)

    def step(
        self,
        positions: torch.Tensor,
        goals: torch.Tensor,
        actions: torch.Tensor,
        alive: torch.Tensor,
    ) -> Step:
        """One move of every episode; `alive` `[T, R]` marks those that have not ended (the
        others stay where they are and earn nothing)."""
        if self.normalized_actions:
            actions = actions * self.max_action
        moves = actions.clamp(-self.max_action, self.max_action) * alive.unsqueeze(-1)
        positions = positions + moves
        offsets = positions - goals.unsqueeze(1)
        rewards = -torch.linalg.vector_norm(offsets, dim=-1) * alive
        if self.goal_radius is None:
            done = torch.zeros_like(alive, dtype=torch.bool)
        else:
            done = (offsets.abs() < self.goal_radius).all(dim=-1) & alive.bool()
        return Step(positions, rewards, done)


class _Simulation:
    def __init__(self, env: Navigation2D, goals: torch.Tensor, positions: torch.Tensor) -> None:
        self.env, self.goals, self.positions = env, goals, positions

    def observe(self) -> torch.Tensor:
        return self.positions

    def step(self, actions: torch.Tensor, alive: torch.Tensor) -> Transition:
        step = self.env.step(self.positions, self.goals, actions, alive)
        self.positions = step.positions
        return Transition(step.positions, step.rewards, step.done)
