"""Task-parallel meta-training over processes started by `torchrun` (`torch.distributed`).

`DistributedDataParallel` cannot carry higher-order gradients (its hooks see only the first
backward pass), so the meta-gradient is combined here by hand: every rank draws the same global
meta-batch, computes the meta-gradient of its contiguous slice of tasks with its own execution
plan, and one flat all-reduce sums the slices' gradients, each weighted by its share of the
global meta-batch. Task i of step t is the same task whatever the number of processes, so a run
is world-size invariant up to the order of floating-point summation.

`World` is the single process (every collective a no-op) unless `torchrun` started this process
with `WORLD_SIZE` > 1; `init_world()` joins the group, `world()` answers afterwards.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as dist

from metagrad.errors import ConfigError, DistributedError, MetagradError
from metagrad.tasks.batch import TaskBatch

T = TypeVar("T")
Metrics = dict[str, torch.Tensor]


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run: `rank` of `size`."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run folder and prints."""
        return self.rank == 0

    def shard(self, count: int, rank: int | None = None) -> slice:
        """The contiguous part of `count` items that `rank` (default: this one) takes: the
        first `count % size` ranks take one more."""
        rank = self.rank if rank is None else rank
        base, extra = divmod(count, self.size)
        start = rank * base + min(rank, extra)
        return slice(start, start + base + (rank < extra))

    def local(self, batch: TaskBatch) -> TaskBatch:
        """This rank's tasks of the global meta-batch `batch`."""
        if self.size == 1:
            return batch
        part = self.shard(batch.num_tasks)
        return TaskBatch(*(t[part] for t in batch.tensors()))

    def check_meta_batch(self, meta_batch_size: int) -> None:
        if meta_batch_size < self.size:
            raise _shared(
                ConfigError(
                    f"train.meta_batch_size = {meta_batch_size} is smaller than the {self.size} "
                    "processes: each process needs at least one task. Raise train.meta_batch_size "
                    f"to {self.size} or more, or start fewer processes"
                )
            )

    def combine(
        self, grads: list[torch.Tensor], metrics: Metrics, total: int
    ) -> tuple[list[torch.Tensor], Metrics]:
        """The meta-gradient of all `total` tasks of the global meta-batch and every task's
        metrics, in task order, from this rank's `grads` (the mean over its own tasks) and
        `metrics` (`[own tasks, ...]`).

        One flat all-reduce sums the ranks' gradients, each weighted by its share of the tasks;
        one more gathers the metrics (each rank writes its rows into zeros: an exact sum)."""
        flat = self.mean(torch.cat([g.reshape(-1) for g in grads]), total)
        parts = flat.split([g.numel() for g in grads])
        return [p.view_as(g) for p, g in zip(parts, grads, strict=True)], self.gather_rows(
            metrics, total
        )

    def mean(self, value: torch.Tensor, total: int) -> torch.Tensor:
        """The mean over all `total` tasks of the meta-batch from `value`, this rank's mean over
        its own tasks: the ranks' values summed, each weighted by its share of the tasks."""
        if self.size == 1:
            return value
        own = len(range(total)[self.shard(total)])
        return _all_reduce_sum(value * (own / total))

    def gather_rows(self, values: Metrics, total: int) -> Metrics:
        """Every rank's rows of `values`, concatenated in rank order (`total` rows in all)."""
        if self.size == 1:
            return values
        start = self.shard(total).start
        columns = {k: v.reshape(v.shape[0], -1) for k, v in values.items()}
        width = sum(c.shape[1] for c in columns.values())
        reference = next(iter(values.values()))
        rows = torch.zeros(total, width, dtype=torch.float64, device=reference.device)
        rows[start : start + reference.shape[0]] = torch.cat(
            [c.double() for c in columns.values()], dim=1
        )
        rows = _all_reduce_sum(rows).split([c.shape[1] for c in columns.values()], dim=1)
        return {
            k: part.to(v.dtype).reshape(total, *v.shape[1:])
            for (k, v), part in zip(values.items(), rows, strict=True)
        }

    def gather_objects(self, value: T) -> list[T]:
        """Every rank's `value`, in rank order (pickled: for small, irregular results)."""
        if self.size == 1:
            return [value]
        gathered: list[Any] = [None] * self.size
        _collective(dist.all_gather_object, gathered, value)
        return gathered

    def concat(self, values: Metrics | None) -> Metrics:
        """Every rank's `values` (`[its tasks, ...]` each, None for no tasks) concatenated in
        rank order, on this rank's device."""
        if self.size == 1:
            return values
        device = next(iter(values.values())).device if values else torch.device("cpu")
        shared = None if values is None else {k: v.cpu() for k, v in values.items()}
        parts = [p for p in self.gather_objects(shared) if p is not None]
        return {k: torch.cat([p[k] for p in parts]).to(device) for k in parts[0]}

    def agree(self, *values: float) -> list[float]:
        """The largest of each value over the ranks (elapsed time, a stop request): every rank
        then takes the same decision at the same step."""
        if self.size == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=_device())
        _collective(dist.all_reduce, tensor, op=dist.ReduceOp.MAX)
        return tensor.tolist()

    def on_main(self, fn: Callable[[], T]) -> T:
        """`fn()` on rank 0 only, its result (or its error) handed to every rank: work on the
        run folder, which one process holds."""
        if self.size == 1:
            return fn()
        outcome: list[Any] = [None]
        if self.is_main:
            try:
                outcome = [("value", fn())]
            except MetagradError as err:
                outcome = [("error", err)]
        _collective(dist.broadcast_object_list, outcome, src=0)
        kind, value = outcome[0]
        if kind == "error":
            raise _shared(value)
        return value

    def broadcast(self, tensors: Sequence[torch.Tensor]) -> None:
        """Overwrite `tensors` with rank 0's, in place (parameters, buffers)."""
        if self.size == 1 or not tensors:
            return
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        _collective(dist.broadcast, flat, src=0)
        with torch.no_grad():
            for tensor, part in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
                tensor.copy_(part.view_as(tensor))

    def check_same(self, tensors: Sequence[torch.Tensor], step: int) -> None:
        """Raise `DistributedError` naming the ranks whose `tensors` (the meta-parameters)
        differ from rank 0's: each rank's checksum is gathered and compared."""
        if self.size == 1:
            return
        checksum = torch.stack(
            [torch.stack([t.double().sum(), t.double().square().sum()]) for t in tensors]
        ).reshape(-1)
        sums = self.gather_objects(checksum.cpu())
        diverged = [r for r, s in enumerate(sums) if not torch.equal(s, sums[0])]
        if diverged:
            raise DistributedError(
                f"the parameters of rank {', '.join(map(str, diverged))} differ from rank 0's at "
                f"outer step {step}: the processes no longer train the same model (a changed "
                "file or library on one machine?). The last checkpoint is intact; check that "
                "every machine runs the same metagrad and torch, then resume"
            )

    def barrier(self) -> None:
        if self.size > 1:
            _collective(dist.barrier)


SINGLE = World()


def world() -> World:
    """The world this process belongs to: `SINGLE` unless `init_world` joined a group."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return SINGLE


def launched() -> bool:
    """Whether `torchrun` started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_world(device: torch.device) -> World:
    """Join the process group `torchrun` describes (gloo on the CPU, NCCL on GPUs), once; a
    single process stays `SINGLE`. Ranks other than 0 print nothing on standard output."""
    if not launched() or dist.is_initialized():
        return world()
    if device.type == "cuda":
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    atexit.register(dist.destroy_process_group)  # for Python callers; see `exit_process`
    joined = world()
    if not joined.is_main:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    return joined


def exit_process(code: int) -> NoReturn:
    """End this process with exit code `code`. In a process group, its standard streams are
    flushed and the group destroyed, then the process ends at once: left to the interpreter's
    teardown, gloo's threads abort it about one time in three ("terminate called without an
    active exception", exit code −6) after all its work is done."""
    if not dist.is_initialized():
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    dist.destroy_process_group()
    os._exit(code)


def local_device(device: torch.device) -> torch.device:
    """The device of this rank: under `torchrun`, GPU `LOCAL_RANK` when `device` is a GPU."""
    if device.type != "cuda" or not launched():
        return device
    local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(local)
    return local


def _shared(err: MetagradError) -> MetagradError:
    """`err`, raised by every process alike (`MetagradError.shared`)."""
    err.shared = True
    return err


def _device() -> torch.device:
    """Where a collective's tensors live: NCCL needs them on this rank's GPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    moved = tensor.to(_device())
    _collective(dist.all_reduce, moved)
    return moved.to(tensor.device)


def _collective(fn: Callable, *args: Any, **kwargs: Any) -> None:
    """`fn(*args)`, with a lost process reported as a `DistributedError`, not a C++ trace."""
    try:
        fn(*args, **kwargs)
    except RuntimeError as err:  # DistBackendError included
        # gloo's "[<source file>:<line>] Connection closed by peer [...]. This is typically…"
        said = re.sub(r"^\[[^\]]*\]\s*", "", str(err).strip()).split(". ")[0].splitlines()
        first = said[0] if said else type(err).__name__
        raise DistributedError(
            f"rank {world().rank} lost contact with the other processes ({first}): one of them "
            "stopped or failed, see its own message above. The last complete checkpoint is "
            "intact: run the same command again to resume from it"
        ) from err
