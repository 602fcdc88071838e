"""Rollouts of a policy in every task of a meta-batch at once, and their policy-gradient batch."""

from __future__ import annotations

from typing import NamedTuple

import torch

from metagrad.models.functional import Params
from metagrad.rl.environment import TaskEnvironment
from metagrad.rl.policy import policy, sample
from metagrad.rl.returns import advantages


class Episodes(NamedTuple):
    """R episodes of each of T tasks, padded to the horizon H."""

    observations: torch.Tensor
    """The observation before each action, `[T, R, H, obs]`."""
    actions: torch.Tensor
    """The sampled (unclipped) actions, `[T, R, H, act]`."""
    rewards: torch.Tensor
    """`[T, R, H]`, 0 after an episode ended."""
    mask: torch.Tensor
    """1 where the step was taken (the episode had not ended before it), `[T, R, H]`."""

    def returns(self) -> torch.Tensor:
        """The undiscounted return of every episode, `[T, R]` (what the paper reports)."""
        return self.rewards.sum(-1)

    @property
    def steps(self) -> int:
        """Environment steps taken."""
        return int(self.mask.sum())


class Batch(NamedTuple):
    """Episodes flattened per task for the policy-gradient losses: every row is one time step."""

    observations: torch.Tensor
    """`[T, N, obs]` with N = R·H."""
    actions: torch.Tensor
    """`[T, N, act]`."""
    advantages: torch.Tensor
    """`[T, N]`, 0 where `mask` is."""
    mask: torch.Tensor
    """`[T, N]`."""


@torch.no_grad()
def rollout(
    env: TaskEnvironment,
    params: Params,
    tasks: torch.Tensor,
    rollouts: int,
    generator: torch.Generator | None = None,
    part: slice = slice(None),
) -> Episodes:
    """`rollouts` episodes per task of `tasks[part]` with the policy `params` (one copy, or one
    per task of the part with a leading dimension), actions and initial states drawn from
    `generator` (None: the global RNG) as they are for these tasks when all of `tasks` are
    rolled out: the episodes of a task do not depend on which process runs it."""
    simulation = env.simulate(tasks, rollouts, generator, part)
    current = simulation.observe().to(tasks.dtype)
    alive = torch.ones(current.shape[:2], dtype=tasks.dtype)
    observations, actions, rewards, masks = [], [], [], []
    for _ in range(env.horizon):
        observations.append(current)
        masks.append(alive)
        action = sample(policy(params, current), generator, part, tasks.shape[0])
        step = simulation.step(action, alive)
        actions.append(action)
        rewards.append(step.rewards.to(tasks.dtype))
        current = step.observations.to(tasks.dtype)
        alive = alive * ~step.done
    return Episodes(
        torch.stack(observations, 2),
        torch.stack(actions, 2),
        torch.stack(rewards, 2),
        torch.stack(masks, 2),
    )


def to_batch(episodes: Episodes, *, gamma: float, gae_lambda: float) -> Batch:
    """The episodes with their normalised GAE advantages (linear baseline refit per task)."""
    adv = advantages(
        episodes.observations, episodes.rewards, episodes.mask, gamma=gamma, gae_lambda=gae_lambda
    )
    tasks = episodes.observations.shape[0]
    return Batch(
        episodes.observations.reshape(tasks, -1, episodes.observations.shape[-1]),
        episodes.actions.reshape(tasks, -1, episodes.actions.shape[-1]),
        adv.reshape(tasks, -1),
        episodes.mask.reshape(tasks, -1),
    )
