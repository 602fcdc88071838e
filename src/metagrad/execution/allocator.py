"""Process-wide memory-allocator settings for meta-learning workloads."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP = 1 << 30


def tune_allocator() -> bool:
    """Keep freed blocks of up to 1 GiB in the process instead of handing them back to the OS.

    A meta-step allocates and frees the same large temporary tensors over and over. With
    glibc's defaults each of them is a fresh `mmap`, and its pages fault in again on first
    touch: measured on a 2-core CPU, that doubles the time of a looped Conv-4 meta-step and
    quadruples a vectorised one. glibc only (elsewhere nothing happens); set
    METAGRAD_DEFAULT_MALLOC=1 to keep the defaults. Returns whether the settings were applied.
    """
    if os.environ.get("METAGRAD_DEFAULT_MALLOC") == "1":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    results = [mallopt(option, _KEEP) for option in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD)]
    return all(results)
