"""One cell of a sweep, in a process of its own: train (or resume), evaluate, record the outcome.

`python -m metagrad.sweeps.cell <sweep folder> <cell>`; the sweep starts it. A process per cell
frees all of a cell's memory when it ends, measures the cell's own peak memory, and keeps one
cell's crash from ending the sweep.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from metagrad.build import objective_for, resolve_device
from metagrad.config import flatten, load_config
from metagrad.errors import Interrupted, MemoryBudgetError, MetagradError
from metagrad.evaluate import evaluate_run
from metagrad.execution.distributed import exit_process, init_world, local_device
from metagrad.execution.memory import peak_rss
from metagrad.logging import METRICS_FILE, read_metrics
from metagrad.runs import is_run_folder
from metagrad.sweeps.folder import SweepFolder
from metagrad.train import fit


def run_cell(folder: SweepFolder, cell: str, wandb_project: str | None = None) -> int:
    """Train and evaluate `cell`, recording its outcome; returns the process exit code. With
    `wandb_project`, the finished run is also logged to W&B (`log_wandb`)."""
    config = load_config(folder.config(cell))
    world = init_world(local_device(resolve_device(config.train.device)))
    if not world.is_main:  # one of a torchrun group: rank 0 records the outcome
        folder = _Unrecorded(folder)
    run_dir = folder.run(cell)
    primary = objective_for(config).primary
    record = {"primary": primary, "result": None, "needed_memory": None, "message": None}
    trained = folder.outcome(cell)["status"] == "trained"
    try:
        if not trained:
            fit(config, run_dir, resume=is_run_folder(run_dir), progress=False)
            trained = True
            folder.record(cell, status="trained", **record, peak_memory=_peak())
        result = evaluate_run(run_dir)
    except MemoryBudgetError as err:
        folder.record(
            cell,
            **(record | {"needed_memory": err.needed, "message": str(err)}),
            status="skipped",
            peak_memory=_peak(),
        )
        return 0
    except (torch.OutOfMemoryError, MemoryError) as err:
        message = f"out of memory while running: {err}"
        folder.record(
            cell, **(record | {"message": message}), status="skipped", peak_memory=_peak()
        )
        return 0
    except (Interrupted, KeyboardInterrupt) as err:  # a trained run is evaluated, not trained
        status = "trained" if trained else "interrupted"
        message = str(err) or "stopped by SIGINT; the last complete checkpoint is intact"
        folder.record(cell, **(record | {"message": message}), status=status)
        return getattr(err, "exit_code", 128 + signal.SIGINT)
    except MetagradError as err:
        folder.record(cell, **(record | {"message": str(err)}), status="failed")
        if world.is_main or not err.shared:
            print(f"metagrad: error: {err}", file=sys.stderr)
        return err.exit_code
    record["result"] = result["saved_to"]
    folder.record(cell, status="finished", **record, peak_memory=_peak())
    if not world.is_main:
        return 0
    _hparams(run_dir, config.to_dict(), result, primary)
    if wandb_project:
        log_wandb(wandb_project, folder.path.name, cell, run_dir, config.to_dict(), result)
    return 0


class _Unrecorded:
    """A sweep folder as processes other than rank 0 see it: read, never written."""

    def __init__(self, folder: SweepFolder):
        self.folder = folder

    def __getattr__(self, name: str) -> Any:
        return getattr(self.folder, name)

    def record(self, cell: str, **outcome: Any) -> None:
        pass


def _peak() -> int:
    """This process's peak memory: CUDA tensors on a GPU, resident memory on a CPU."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated()
    return peak_rss()


def _hparams(run_dir: Path, config: dict[str, Any], result: dict, primary: str) -> None:
    """The run's config and final metrics in TensorBoard's HPARAMS tab."""
    from torch.utils.tensorboard import SummaryWriter

    params = {
        k: v if isinstance(v, (int, float, str, bool)) else str(v)
        for k, v in flatten(config).items()
    }
    metrics = {
        f"hparams/pre_{primary}": result["mean"][primary][0],
        f"hparams/post_{primary}": result["mean"][primary][-1],
    }
    with SummaryWriter(str(run_dir / "tensorboard")) as writer:
        writer.add_hparams(params, metrics, run_name="hparams")


def log_wandb(
    project: str, group: str, name: str, run_dir: Path, config: dict[str, Any], result: dict
) -> None:
    """One W&B run per cell: every config field in `wandb.config` (dotted keys), the sweep as
    the group, the logged metrics at their outer steps, and the test metrics after each
    test-time inner step as the summary. `WANDB_MODE=offline` keeps it on disk (`wandb sync`
    uploads it later)."""
    import wandb

    run = wandb.init(
        project=project, group=group, name=name, config=flatten(config), dir=str(run_dir)
    )
    for line in read_metrics(run_dir / METRICS_FILE):
        values = {f"{line['split']}/{k}": v for k, v in line.items() if k not in ("step", "split")}
        run.log(values, step=line["step"])
    for metric, means in result["mean"].items():
        run.summary[f"test/{metric}"] = means
        run.summary[f"test/pre_{metric}"] = means[0]
        run.summary[f"test/post_{metric}"] = means[-1]
    run.finish()


def main(argv: Sequence[str] | None = None) -> int:
    folder, cell, *wandb_project = argv or sys.argv[1:]
    return run_cell(SweepFolder(Path(folder)), cell, *wandb_project)


if __name__ == "__main__":
    exit_process(main())
