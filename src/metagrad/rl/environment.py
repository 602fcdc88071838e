"""What meta-RL training asks of an environment: a task distribution and a batched simulation.

A *task environment* samples task parameters (a goal, a direction, a target velocity) as a pure
function of a generator, and simulates R episodes of each of T tasks at once. The policy sees
one observation tensor `[T, R, obs]` per time step, whatever runs underneath: a torch
computation (2D navigation) or a Gymnasium vector environment of MuJoCo models (HalfCheetah).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch

from metagrad.tasks.seeding import task_generator


class Transition(NamedTuple):
    observations: torch.Tensor
    """The observation after the step, `[T, R, obs]`."""
    rewards: torch.Tensor
    """`[T, R]`; 0 where the episode had already ended."""
    done: torch.Tensor
    """Whether the episode ended with this step (before the horizon), `[T, R]` bool."""


class Simulation(Protocol):
    """R running episodes of each of T tasks."""

    def observe(self) -> torch.Tensor:
        """The first observation of every episode, `[T, R, obs]`."""
        ...

    def step(self, actions: torch.Tensor, alive: torch.Tensor) -> Transition:
        """Apply `actions` `[T, R, act]` to the episodes that are `alive` `[T, R]` (1/0)."""
        ...


class TaskEnvironment(Protocol):
    observation_size: int
    action_size: int
    horizon: int
    """Steps per episode."""

    def sample_tasks(
        self, generator: torch.Generator, num_tasks: int, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """`num_tasks` task parameters, `[T, p]`, drawn from `generator` only."""
        ...

    def simulate(
        self,
        tasks: torch.Tensor,
        rollouts: int,
        generator: torch.Generator | None,
        part: slice = slice(None),
    ) -> Simulation:
        """Start `rollouts` episodes of each task of `tasks[part]`; initial-state noise from
        `generator` (None: the global RNG), each task's the noise it gets when all of `tasks`
        are simulated (a process simulates its part of a meta-batch, the same episodes)."""
        ...


def fixed_tasks(
    env: TaskEnvironment,
    seed: int,
    split: str,
    index: int,
    num_tasks: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The tasks of meta-batch `index` of `split`: a pure function of its arguments."""
    return env.sample_tasks(task_generator(seed, split, index), num_tasks, dtype)
