"""A sweep folder: its cells, their run folders, what became of each, and the summary.

```
<sweep>/sweep.json            the cells ever run here: hash → swept values (the marker)
<sweep>/configs/<hash>.yaml   each cell's resolved config
<sweep>/runs/<hash>/          each cell's run folder (as `metagrad train` writes it)
<sweep>/outcomes/<hash>.json  what became of it: finished, trained, skipped, failed, interrupted
<sweep>/logs/<hash>.log       what it printed
<sweep>/summary.csv|.jsonl    one row per cell
```
A cell's folder is named by the hash of its config (`spec.identity`), so running a sweep again
finds every run it made: finished ones are skipped, interrupted ones resumed.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore
from metagrad.config import Config, dump_yaml
from metagrad.errors import CheckpointError
from metagrad.runs import check_writable, replace_text

SWEEP_FILE = "sweep.json"
STATUSES = ("finished", "trained", "skipped", "failed", "interrupted", "pending")
"""finished: trained and evaluated; trained: evaluation still to do; skipped: did not fit in
memory; failed: stopped by an error; interrupted: stopped by a signal, resumable; pending: not
run yet."""


class SweepFolder:
    """The files of one sweep folder; nothing outside those it names is ever written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def config(self, cell: str) -> Path:
        return self.path / "configs" / f"{cell}.yaml"

    def run(self, cell: str) -> Path:
        return self.path / "runs" / cell

    def outcome_path(self, cell: str) -> Path:
        return self.path / "outcomes" / f"{cell}.json"

    def log(self, cell: str) -> Path:
        return self.path / "logs" / f"{cell}.log"

    def is_sweep(self) -> bool:
        return (self.path / SWEEP_FILE).is_file()

    def cells(self) -> dict[str, dict[str, Any]]:
        """Cell hash → its swept values, in the order the cells were first run."""
        if not self.is_sweep():
            return {}
        try:
            return json.loads((self.path / SWEEP_FILE).read_text())["cells"]
        except (OSError, ValueError, KeyError) as err:
            raise CheckpointError(
                f"{self.path / SWEEP_FILE} is damaged ({err}); restore it from a copy, or run the "
                "sweep in a new folder"
            ) from err

    def create(self) -> None:
        """Make the folder, or check that it is a sweep folder (never another's files)."""
        if self.path.exists() and not self.path.is_dir():
            raise CheckpointError(f"{self.path} is a file, not a folder; choose another --out")
        if self.path.is_dir() and any(self.path.iterdir()) and not self.is_sweep():
            raise CheckpointError(
                f"{self.path} is not empty and is not a metagrad sweep folder (it has no "
                f"{SWEEP_FILE}); refusing to write in it. Choose another --out"
            )
        try:
            for part in ("configs", "runs", "outcomes", "logs"):
                (self.path / part).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CheckpointError(
                f"cannot create sweep folder {self.path}: {err.strerror or err}; choose another "
                "--out"
            ) from err
        check_writable(self.path)

    def add(self, cells: dict[str, tuple[dict[str, Any], Config]]) -> None:
        """Record `cells` (hash → swept values and config) beside those already there."""
        known = self.cells()
        for cell, (values, config) in cells.items():
            known.setdefault(cell, values)
            replace_text(self.config(cell), dump_yaml(config))
        replace_text(self.path / SWEEP_FILE, json.dumps({"cells": known}, indent=2) + "\n")

    def outcome(self, cell: str) -> dict[str, Any]:
        """What became of `cell` (`{"status": "pending"}` before it ran)."""
        path = self.outcome_path(cell)
        if not path.is_file():
            return {"status": "pending"}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {"status": "pending"}  # a torn write: the cell runs (resumes) again

    def record(self, cell: str, **outcome: Any) -> None:
        """Replace `cell`'s outcome, keeping the highest peak memory of its sessions."""
        peaks = [self.outcome(cell).get("peak_memory"), outcome.get("peak_memory")]
        outcome["peak_memory"] = max((p for p in peaks if p), default=None)
        replace_text(self.outcome_path(cell), json.dumps(outcome, indent=2) + "\n")

    def rows(self) -> list[dict[str, Any]]:
        """One summary row per cell: its swept values, status, metrics, time and memory."""
        cells = self.cells()
        swept = list(dict.fromkeys(key for values in cells.values() for key in values))
        return [
            {"cell": cell, **{key: values.get(key) for key in swept}, **self._measures(cell)}
            for cell, values in cells.items()
        ]

    def _measures(self, cell: str) -> dict[str, Any]:
        outcome = self.outcome(cell)
        return {
            "status": outcome["status"],
            **run_measures(self.run(cell), outcome.get("result"), outcome.get("primary")),
            "peak_memory": outcome.get("peak_memory"),
            "needed_memory": outcome.get("needed_memory"),
            "run": str(self.run(cell)),
            "message": outcome.get("message"),
        }

    def write_summary(self) -> list[dict[str, Any]]:
        """`summary.jsonl` and `summary.csv`, written whole or not at all; returns the rows."""
        rows = self.rows()
        columns = list(dict.fromkeys(key for row in rows for key in row))
        table = io.StringIO()
        writer = csv.DictWriter(table, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell_text(v) for k, v in row.items()})
        replace_text(self.path / "summary.csv", table.getvalue())
        replace_text(self.path / "summary.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        return rows


def run_measures(run_dir: Path, result_path: str | Path | None, primary: str | None) -> dict:
    """A run's evaluation (`result_path`, its `primary` metric before and after adaptation) and
    training (steps, time, best validation) as summary columns; those not there yet left out."""
    row: dict[str, Any] = {}
    result = _read_json(result_path)
    if result is not None and primary in result["mean"]:
        row |= {
            "metric": primary,
            "pre": result["mean"][primary][0],
            "post": result["mean"][primary][-1],
            "post_ci95": result["ci95"][primary][-1],
            "eval_steps": len(result["mean"][primary]) - 1,
        }
    state = _last_state(run_dir)
    if state is not None:
        steps, seconds = state["step"], state["elapsed"]
        best = state.get("best") or {}
        row |= {
            "best_val": best.get("value"),
            "best_step": best.get("step"),
            "steps": steps,
            "train_seconds": round(seconds, 3),
            "seconds_per_step": round(seconds / steps, 5) if steps else None,
        }
    return row


def _cell_text(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _read_json(path: str | Path | None) -> dict[str, Any] | None:
    if not path or not Path(path).is_file():
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _last_state(run_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint's step, time and best validation, or None before the first."""
    store = CheckpointStore(run_dir / CHECKPOINT_DIR)
    if not store.any_paths():
        return None
    try:
        return store.latest()
    except CheckpointError:
        return None
