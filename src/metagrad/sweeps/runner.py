"""Run a sweep: every cell checked first, then run one process per cell, `jobs` at a time.

Finished cells are skipped and interrupted ones resumed, so running the same sweep again
completes it. SIGINT/SIGTERM stop the sweep: each running cell is asked once to stop (it saves a
checkpoint), the summary is written, and the sweep ends with the signal's exit code.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from metagrad.errors import ConfigError, Interrupted
from metagrad.execution.memory import format_size
from metagrad.interrupt import GracefulStop
from metagrad.runs import RunLock
from metagrad.sweeps.folder import SweepFolder
from metagrad.sweeps.spec import NOT_IDENTITY, Sweep, identity

DONE = ("finished",)
"""Statuses a second run of the sweep leaves alone; every other cell is run (or resumed)."""


def run_sweep(
    sweep: Sweep,
    folder: SweepFolder,
    *,
    jobs: int = 1,
    nproc_per_node: int = 1,
    max_memory: str | None = None,
    progress: bool = True,
    wandb_project: str | None = None,
    say: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run every cell of `sweep` in `folder` not finished there yet; returns the summary rows.

    `max_memory` is every cell's `train.max_memory`: the planner picks chunking and
    checkpointing to fit it, and a cell that cannot fit is recorded as skipped with its need.
    `nproc_per_node` > 1 runs each cell as a `torchrun` group of that many processes.
    `wandb_project`: log each finished cell to W&B too (the `wandb` extra).
    """
    if wandb_project and importlib.util.find_spec("wandb") is None:
        raise ConfigError("--wandb needs the wandb package; pip install 'metagrad[wandb]'")
    common = [*sweep.common, *([f"train.max_memory={max_memory}"] if max_memory else [])]
    sweep = Sweep(sweep.base, tuple(common), sweep.cells, sweep.metric)
    cells = _named_cells(sweep)
    folder.create()
    with RunLock(folder.path):
        folder.add({name: (cell.values, config) for name, (cell, config) in cells.items()})
        todo = [name for name in cells if folder.outcome(name)["status"] not in DONE]
        say(
            f"sweep of {len(cells)} runs in {folder.path}: {len(cells) - len(todo)} finished "
            f"already, {len(todo)} to run, {jobs} at a time"
        )
        extra = [wandb_project] if wandb_project else []
        launcher = [sys.executable, "-m"]
        if nproc_per_node > 1:  # a fresh rendezvous on a free port for each cell
            launcher += ["torch.distributed.run", "--standalone"]
            launcher += [f"--nproc-per-node={nproc_per_node}", "-m"]
        env = dict(os.environ)
        processes = jobs * nproc_per_node
        if processes > 1 and "OMP_NUM_THREADS" not in env:  # share the cores, not oversubscribe
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))

        def command(name: str) -> list[str]:
            return [*launcher, "metagrad.sweeps.cell", str(folder.path), name, *extra]

        _run_cells(folder, todo, cells, jobs, progress, say, env, command)
        return folder.write_summary()


def _named_cells(sweep: Sweep) -> dict[str, tuple]:
    """Cell hash → (cell, config), every config checked; two cells that are the same run (they
    differ only in fields that do not change what is learned) are an error."""
    cells: dict[str, tuple] = {}
    for cell, config in sweep.resolved():
        name = identity(config)
        if name in cells:
            raise ConfigError(
                f"sweep cells {cells[name][0].describe()!r} and {cell.describe()!r} are the same "
                f"run: they differ only in fields that do not change what is learned "
                f"({', '.join(NOT_IDENTITY)}); sweep those with `metagrad bench --sweep`"
            )
        cells[name] = (cell, config)
    return cells


def _run_cells(
    folder: SweepFolder,
    todo: list[str],
    cells: dict[str, tuple],
    jobs: int,
    progress: bool,
    say: Callable[[str], None],
    env: dict[str, str],
    command: Callable[[str], list[str]],
) -> None:
    """Run the cells `todo`, `jobs` at a time, each as `command(name)` with `env`."""
    queue, running = list(todo), {}
    bar = tqdm(total=len(todo), desc="sweep", unit="run", disable=not progress)
    write = bar.write if progress else say
    with GracefulStop() as stop:
        while queue or running:
            while queue and len(running) < jobs and not stop.requested:
                name = queue.pop(0)
                write(f"start {name}: {cells[name][0].describe()}")
                running[name] = _start(folder, name, env, command(name))
            if stop.requested:
                for process in running.values():  # SIGINT: a cell stops with a checkpoint
                    process.send_signal(signal.SIGINT)  # wherever it is
                for name, process in running.items():
                    _finish(folder, name, process.wait(), cells, write)
                folder.write_summary()
                raise Interrupted(
                    stop.requested,
                    saved=True,
                    message="sweep stopped by {signal}; the running runs saved checkpoints and "
                    f"the summary is in {folder.path}. Run the same command again to continue",
                )
            for name, process in list(running.items()):
                if process.poll() is not None:
                    del running[name]
                    _finish(folder, name, process.returncode, cells, write)
                    folder.write_summary()
                    bar.update()
            time.sleep(0.2)
    bar.close()


def _start(
    folder: SweepFolder, name: str, env: dict[str, str], command: list[str]
) -> subprocess.Popen:
    with folder.log(name).open("a") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches the sweep, which asks once
        )


def _finish(folder: SweepFolder, name: str, code: int, cells: dict, write) -> None:
    """Record a cell that ended without saying how (killed) and print its line."""
    outcome = folder.outcome(name)
    if outcome["status"] == "pending" or (code and outcome["status"] == "finished"):
        reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        folder.record(
            name,
            status="failed",
            message=f"the cell's process ended ({reason}) before saying "
            f"how; see {folder.log(name)}",
        )
        outcome = folder.outcome(name)
    write(f"{outcome['status']:>11} {name}: {cells[name][0].describe()}: {_result(folder, name)}")


def _result(folder: SweepFolder, name: str) -> str:
    row = next(r for r in folder.rows() if r["cell"] == name)
    if row["status"] == "finished":
        return (
            f"{row['metric']} {row['pre']:.4g} before adaptation, {row['post']:.4g} ± "
            f"{row['post_ci95']:.2g} after {row['eval_steps']} steps ({row['steps']} steps, "
            f"{row['train_seconds']:.0f} s)"
        )
    if row["status"] == "skipped" and row.get("needed_memory"):
        return f"does not fit: a meta-step needs {format_size(row['needed_memory'])}"
    return row.get("message") or ""
