"""Sinusoid regression tasks (MAML paper §5.1): y = A·sin(x − φ)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from metagrad.tasks.batch import TaskBatch
from metagrad.tasks.seeding import task_generator


@dataclass(frozen=True)
class SinusoidTasks:
    """A = U[0.1, 5.0], φ = U[0, π], x = U[−5, 5]; K support and Q query points per task.

    Every split draws from the same distribution; splits only select independent streams.
    """

    k_shot: int
    n_query: int
    seed: int = 0
    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)

    def functions(
        self, split: str, index: int, num_tasks: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Amplitudes and phases `[num_tasks]` of the tasks in meta-batch `index`."""
        return self._draw(split, index, num_tasks)[:2]

    def sample(self, split: str, index: int, num_tasks: int) -> TaskBatch:
        """Meta-batch `index` of `split`: a pure function of (seed, split, index, num_tasks)."""
        amplitude, phase, x = self._draw(split, index, num_tasks)
        y = amplitude[:, None, None] * torch.sin(x - phase[:, None, None])
        k = self.k_shot
        return TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:])

    def _draw(self, split: str, index: int, num_tasks: int):
        generator = task_generator(self.seed, split, index)

        def uniform(shape: tuple[int, ...], bounds: tuple[float, float]) -> torch.Tensor:
            low, high = bounds
            return torch.rand(shape, generator=generator) * (high - low) + low

        amplitude = uniform((num_tasks,), self.amplitude)
        phase = uniform((num_tasks,), self.phase)
        x = uniform((num_tasks, self.k_shot + self.n_query, 1), self.x_range)
        return amplitude, phase, x
