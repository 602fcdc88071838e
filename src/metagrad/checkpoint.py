"""Checkpoints: written atomically, loaded safely (`weights_only=True`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from metagrad.errors import CheckpointError

CHECKPOINT_DIR = "checkpoints"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to a temporary file beside `path`, flush it to disk, then rename.

    The rename is atomic, so `path` always holds either the previous or the new complete
    checkpoint, even if the process dies or the disk fills up halfway.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp_name, path)
    except BaseException as err:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise CheckpointError(
                f"could not write checkpoint {path}: {err.strerror or err}; the previous "
                "checkpoint is intact. Free disk space or make the run folder writable, then "
                "resume with --resume"
            ) from err
        raise


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train first or give another")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {path} is unreadable or truncated ({type(err).__name__}: {err}); "
            "resume from another checkpoint or retrain"
        ) from err
