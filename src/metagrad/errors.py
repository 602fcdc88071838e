"""Errors a user can act on, each with the exit code the command line returns for it."""

import signal


class MetagradError(Exception):
    """Base class: a message that says what was wrong and what to do."""

    exit_code = 1
    shared = False
    """Raised alike by every process of a multi-process run: only rank 0 says it."""


class ConfigError(MetagradError):
    """A configuration value, key or preset is invalid."""

    exit_code = 2


class MemoryBudgetError(ConfigError):
    """A meta-step does not fit in `train.max_memory`; `needed` is the least it takes, in bytes
    above what was in use before it."""

    def __init__(self, message: str, needed: int):
        super().__init__(message)
        self.needed = needed


class DatasetError(MetagradError):
    """A dataset is missing, incomplete, corrupt or too small for the request."""

    exit_code = 3


class CheckpointError(MetagradError):
    """A checkpoint or run folder cannot be used."""

    exit_code = 4


class NonFiniteError(MetagradError):
    """A loss or gradient became NaN or infinite during training."""

    exit_code = 5


class DistributedError(MetagradError):
    """A process of a multi-process run failed, stopped answering or diverged."""

    exit_code = 6


class Interrupted(MetagradError):
    """Training was stopped by a signal; the exit code is 128 + the signal number."""

    def __init__(
        self,
        signum: int,
        saved: bool,
        step: int | None = None,
        run: str = "<run>",
        message: str | None = None,
    ):
        name = signal.Signals(signum).name
        if message is not None:
            message = message.format(signal=name)
        elif saved:
            message = (
                f"stopped by {name} after outer step {step}; checkpoint saved. "
                f"Continue with: metagrad train --resume {run}"
            )
        else:
            message = f"aborted by a second {name}; the last complete checkpoint is intact"
        super().__init__(message)
        self.exit_code = 128 + signum
