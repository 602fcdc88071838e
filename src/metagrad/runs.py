"""Run folders: one run per folder, never overwritten silently, resumed only as the same run."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore
from metagrad.config import Config, config_from_dict, dump_yaml
from metagrad.errors import CheckpointError, ConfigError

CONFIG_FILE = "config.yaml"
RESUMABLE_CHANGES = (
    "name",
    "task.data_root",
    "train.iterations",
    "train.time_budget",
    "train.snapshot_seconds",
    "train.log_every",
    "train.val_every",
    "train.ckpt_every",
    "train.keep_checkpoints",
    "train.device",
    "train.strategy",
    "train.chunk_size",
    "train.max_memory",
    "train.checkpoint_inner",
    "train.nonfinite",
    "train.max_skips",
    "eval.",
)
"""Fields a resumed run may change: they do not change what is being learned."""


def check_run_dir(run_dir: Path, config: Config, *, resume: bool, overwrite: bool) -> None:
    """Refuse a folder that holds another run, or a resume that would change the run."""
    config_file = run_dir / CONFIG_FILE
    if resume:
        if not CheckpointStore(run_dir / CHECKPOINT_DIR).paths("step"):
            raise CheckpointError(
                f"--resume: {run_dir} holds no checkpoint; start the run without --resume"
            )
        check_resumable(saved_config(run_dir), config, config_file)
    elif run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise CheckpointError(
                f"run folder {run_dir} already holds a run; pass --resume to continue it, "
                "--overwrite to replace it, or --run-dir to choose another folder"
            )
        if not config_file.is_file():
            raise CheckpointError(
                f"--overwrite: {run_dir} is not a run folder (no {CONFIG_FILE}); refusing to "
                "delete it. Choose another --run-dir"
            )


def init_run_dir(run_dir: Path, config: Config, *, resume: bool) -> None:
    """Start the folder afresh (after `check_run_dir`), or record a resumed run's config."""
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(dump_yaml(config))


def saved_config(run_dir: Path) -> Config:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run folder: it has no {CONFIG_FILE}")
    try:
        return config_from_dict(yaml.safe_load(path.read_text()))
    except ConfigError as err:
        raise CheckpointError(f"{path} is not a valid run config: {err}") from err


def check_resumable(saved: Config, new: Config, where: Path) -> None:
    """Refuse to resume with a config that changes what is being learned (n_way, model, ...)."""
    before, after = _flatten(saved.to_dict()), _flatten(new.to_dict())
    changed = [
        key
        for key in sorted(before)
        if before[key] != after[key] and not key.startswith(RESUMABLE_CHANGES)
    ]
    if changed:
        key = changed[0]
        raise CheckpointError(
            f"--resume: {key} = {after[key]!r} but the run in {where.parent} was started with "
            f"{before[key]!r} ({len(changed)} such field(s): {', '.join(changed)}); resume with "
            "the run's own settings, or start a new run folder"
        )


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
