"""A meta-batch of tasks as four stacked tensors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch


@dataclass(frozen=True)
class TaskBatch:
    """T tasks: `x_support [T, N*K, ...]`, `y_support [T, N*K, ...]`, and the same for query."""

    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor

    def __post_init__(self) -> None:
        sizes = {t.shape[0] for t in self.tensors()}
        if len(sizes) != 1:
            raise ValueError(f"all four tensors must share the task dimension, got {sizes}")

    @property
    def num_tasks(self) -> int:
        return self.x_support.shape[0]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.x_support, self.y_support, self.x_query, self.y_query)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TaskBatch:
        """Move to `device`; `dtype` converts the floating-point inputs and targets only."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, dtype=dtype if dtype and t.is_floating_point() else None)

        return TaskBatch(*(move(t) for t in self.tensors()))

    def chunks(self, chunk_size: int | None) -> Iterator[TaskBatch]:
        """Consecutive groups of at most `chunk_size` tasks (all of them when None)."""
        size = chunk_size or self.num_tasks
        for start in range(0, self.num_tasks, size):
            yield TaskBatch(*(t[start : start + size] for t in self.tensors()))


class Task(NamedTuple):
    """One task: its support set (for the inner loop) and its query set (for the outer loss)."""

    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor
