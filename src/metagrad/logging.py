"""Metrics to a JSON-lines file and TensorBoard, side by side in the run folder."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metagrad.errors import CheckpointError

METRICS_FILE = "metrics.jsonl"


class RunLogger:
    """`log(step, split, metrics)` appends one JSON line and the matching TensorBoard scalars.

    A full disk or a folder that stops being writable is a `CheckpointError`: the checkpoints
    saved so far are intact and the run continues with `--resume`. A `silent` logger writes
    nothing: the processes of a multi-process run other than rank 0 log through one.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None, *, silent: bool = False):
        from torch.utils.tensorboard import SummaryWriter  # slow import: only for training

        self.path = run_dir / METRICS_FILE
        self.silent = silent
        if silent:
            return
        with _saving(self.path):
            if resume_step is None:
                self.path.unlink(missing_ok=True)
            else:
                self._truncate_after(resume_step)
            # TensorBoard drops events from purge_step on: the resumed step's are kept, as here
            purge = None if resume_step is None else resume_step + 1
            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)

    def _truncate_after(self, step: int) -> None:
        """Drop lines logged after the checkpoint being resumed: they will be logged again."""
        if not self.path.exists():
            return
        kept = [line for line in read_metrics(self.path) if line["step"] <= step]
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text("".join(json.dumps(line) + "\n" for line in kept))
        os.replace(temporary, self.path)  # a kill meanwhile leaves the old file whole

    def log(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if self.silent:
            return
        with _saving(self.path):
            with self.path.open("a") as stream:
                stream.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
            for name, value in metrics.items():
                self.writer.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        if self.silent:
            return
        with _saving(self.path):
            self.writer.close()


@contextlib.contextmanager
def _saving(path: Path) -> Iterator[None]:
    """Turn an `OSError` while writing the run's logs into an error the user can act on."""
    try:
        yield
    except OSError as err:
        raise CheckpointError(
            f"could not write the metrics of {path.parent}: {err.strerror or err}; the "
            "checkpoints saved so far are intact. Free disk space or make the run folder "
            "writable, then continue with --resume"
        ) from err


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The logged lines. A torn last line (a process killed while writing it) is dropped with a
    warning; damage anywhere else is an error naming the line."""
    lines = path.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                warnings.warn(
                    f"{path}: dropped the incomplete last line {number} (a write was cut short)",
                    stacklevel=2,
                )
                break
            raise CheckpointError(
                f"{path} is damaged at line {number} ({err.msg}); restore it from a copy, or "
                "delete that line to use the rest"
            ) from err
        if not (isinstance(row, dict) and isinstance(row.get("step"), int) and "split" in row):
            raise CheckpointError(
                f"{path} line {number} is not a metrics record (it lacks step and split); "
                "restore the file from a copy, or delete that line"
            )
        rows.append(row)
    return rows
