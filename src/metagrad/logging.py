"""Metrics to a JSON-lines file and TensorBoard, side by side in the run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


class RunLogger:
    """`log(step, split, metrics)` appends one JSON line and the matching TensorBoard scalars."""

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter  # slow import: only for training

        self.path = run_dir / METRICS_FILE
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        else:
            self._truncate_after(resume_step)
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)

    def _truncate_after(self, step: int) -> None:
        """Drop lines logged after the checkpoint being resumed: they will be logged again."""
        if not self.path.exists():
            return
        kept = [line for line in read_metrics(self.path) if line["step"] <= step]
        self.path.write_text("".join(json.dumps(line) + "\n" for line in kept))

    def log(self, step: int, split: str, metrics: dict[str, float]) -> None:
        with self.path.open("a") as stream:
            stream.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
        for name, value in metrics.items():
            self.writer.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        self.writer.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    with path.open() as stream:
        return [json.loads(line) for line in stream if line.strip()]
