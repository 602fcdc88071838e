"""Checkpoints that are complete and verified, or absent.

A checkpoint file is named `<kind>-<step>-<digest>.pt`, where `digest` is the start of the
SHA-256 of its bytes: written to a temporary name, flushed to disk, then renamed, so a reader
never sees a partial file under a checkpoint name, and a file damaged later (truncated, bit rot)
fails its digest and is skipped with a warning in favour of an older one.

Checkpoint files get the permissions of any file the process creates (0666 less the umask).
The environment variable `METAGRAD_CHECKPOINT_PAUSE` (seconds) pauses between writing the
temporary file and renaming it, so that tests can kill a process inside that window.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from metagrad.errors import CheckpointError

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(
    r"^(?P<kind>[a-z0-9]+(?:-[0-9.]+s)?)-(?P<step>\d{8})-(?P<digest>[0-9a-f]{16})\.pt$"
)


class CheckpointStore:
    """The checkpoints of one run: the newest `keep` of kind `step`, one of every other kind.

    Kinds: `step` (periodic; the newest valid one is `last`), `best` (best on validation),
    `top` (the `train.keep_best` best on validation, for an ensemble), `time-<seconds>s`
    (snapshots at points of training time).
    """

    def __init__(self, folder: Path, keep: int = 3):
        self.folder = folder
        self.keep = keep

    def save(self, kind: str, step: int, state: dict[str, Any], *, prune: bool = True) -> Path:
        """Write `state` atomically; with `prune`, older checkpoints of `kind` beyond the
        number kept go (without, only this step's older file: the caller keeps count)."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        path = self.folder / f"{kind}-{step:08d}-{hashlib.sha256(data).hexdigest()[:16]}.pt"
        _atomic_write(path, data)
        others = [(int(_NAME.match(p.name)["step"]), p) for p in self.paths(kind) if p != path]
        older = [p for s, p in others if s != step]  # files of this step were superseded
        keep_older = (self.keep if kind == "step" else 1) - 1
        for old in [p for s, p in others if s == step] + (older[keep_older:] if prune else []):
            old.unlink(missing_ok=True)
        return path

    def steps(self, kind: str) -> list[int]:
        """The steps of the checkpoints of `kind`, newest first."""
        return [int(_NAME.match(p.name)["step"]) for p in self.paths(kind)]

    def remove(self, kind: str, step: int) -> None:
        """The checkpoints of `kind` at `step`."""
        for path in self.paths(kind):
            if int(_NAME.match(path.name)["step"]) == step:
                path.unlink(missing_ok=True)

    def paths(self, kind: str) -> list[Path]:
        """Files of `kind`, newest step first (unverified)."""
        found = []
        for path in self.folder.glob(f"{kind}-*.pt"):
            match = _NAME.match(path.name)
            if match and match["kind"] == kind:
                found.append((int(match["step"]), path))
        return [path for _, path in sorted(found, reverse=True)]

    def any_paths(self) -> list[Path]:
        """Files of every kind, newest step first (unverified)."""
        found = []
        for path in self.folder.glob("*.pt"):
            match = _NAME.match(path.name)
            if match:
                found.append((int(match["step"]), match["kind"] == "step", path))
        return [path for *_, path in sorted(found, reverse=True)]

    def load(self, which: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """The newest valid checkpoint of a kind (`last` = newest periodic one)."""
        kind = "step" if which == "last" else which
        candidates = self.paths(kind)
        state = _first_valid(candidates, map_location)
        if state is not None:
            return state
        if candidates:
            others = sorted({_NAME.match(p.name)["kind"] for p in self.any_paths()} - {kind})
            choose = ", ".join("last" if k == "step" else k for k in others)
            raise CheckpointError(
                f"every {which} checkpoint in {self.folder} is damaged; "
                + (f"use another with --checkpoint ({choose})" if others else "none is usable")
            )
        raise CheckpointError(
            f"{self.folder} holds no {which} checkpoint; train first, or choose another with "
            "--checkpoint (last, best, time-<seconds>s or a file)"
        )

    def latest(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """The newest valid checkpoint of any kind: what a resume continues from.

        Every kind holds the whole training state, so when the periodic ones are damaged the
        run continues from an intact `best` or time snapshot instead."""
        state = _first_valid(self.any_paths(), map_location)
        if state is None:
            raise CheckpointError(
                f"every checkpoint in {self.folder} is damaged, so the run cannot continue; the "
                "files are left as they are. Start a new run with another --run-dir"
            )
        return state

    def remove_temporary(self) -> None:
        """Temporary files left by a process killed while saving."""
        for path in self.folder.glob(".*.tmp"):
            path.unlink(missing_ok=True)


def _first_valid(paths: list[Path], map_location: str | torch.device) -> dict[str, Any] | None:
    for path in paths:
        try:
            return load_checkpoint(path, map_location)
        except CheckpointError as err:
            warnings.warn(f"{err}; trying an older checkpoint", stacklevel=3)
    return None


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, data: bytes) -> None:
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes 0600; be like any other file
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        time.sleep(float(os.environ.get("METAGRAD_CHECKPOINT_PAUSE", 0)))
        os.replace(tmp_name, path)
    except BaseException as err:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise CheckpointError(
                f"could not write checkpoint {path}: {err.strerror or err}; the previous "
                "checkpoints are intact. Free disk space or make the run folder writable, then "
                "continue with --resume"
            ) from err
        raise


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint file, verifying the digest in its name when it has one."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"checkpoint {path} cannot be read: {err.strerror or err}") from err
    match = _NAME.match(path.name)
    if match and hashlib.sha256(data).hexdigest()[:16] != match["digest"]:
        raise CheckpointError(f"checkpoint {path} is damaged (its checksum does not match)")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(err).__name__}: {err}); use another one"
        ) from err
