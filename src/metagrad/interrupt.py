"""Graceful interruption: the first SIGINT/SIGTERM asks the outer loop to stop after its step."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from metagrad.errors import Interrupted


class GracefulStop:
    """Within `with GracefulStop() as stop:`, `stop.requested` holds the first signal received.

    The outer loop checks it after each step, saves a checkpoint and raises `Interrupted`. A
    second signal raises `Interrupted` at once, wherever the loop is: checkpoints are written
    atomically, so the last complete one survives.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            raise Interrupted(signum, saved=False)
        self.requested = signum

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
