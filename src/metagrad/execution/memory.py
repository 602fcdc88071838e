"""Measuring memory: what the process holds, and the peak a piece of work adds to it."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Callable

import torch

from metagrad.errors import ConfigError


def format_size(size: float) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def memory_in_use(device: torch.device) -> int:
    """What the process holds now: CUDA tensors on a GPU, resident memory on a CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return _proc_status("VmRSS:")


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak memory `fn()` adds to what is in use when it starts.

    CUDA: the allocator's peak. CPU: the process's peak resident memory (Linux), after
    returning freed heap memory to the system, so that reuse does not hide the need.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    start = reset_peak_rss()
    fn()
    return peak_rss() - start


def reset_peak_rss() -> int:
    """Return freed heap memory to the system, reset the process's peak resident size to the
    current one (Linux), and return it in bytes."""
    release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError as err:
        raise ConfigError(
            f"cannot reset the peak memory counter ({err}), so train.max_memory cannot be "
            "measured here; set train.chunk_size and train.checkpoint_inner by hand instead"
        ) from None
    return _proc_status("VmRSS:")


def peak_rss() -> int:
    """The process's peak resident size since the last `reset_peak_rss` (Linux), in bytes."""
    return _proc_status("VmHWM:")


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise ConfigError(f"/proc/self/status has no {key} line: cannot measure memory here")


def release_free_memory() -> None:
    """Hand freed memory back: the heap to the system (glibc), and on a GPU the blocks PyTorch's
    caching allocator holds, so the next peak is the real one and what runs next does not work
    around blocks cut to the sizes of what ran before."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
