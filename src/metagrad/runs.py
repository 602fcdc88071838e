"""Run folders: one run per folder, never overwritten silently, resumed only as the same run.

A folder is a run folder when it holds the marker file metagrad writes on creating it; only such
a folder may be replaced (`--overwrite`), and only the entries metagrad itself writes are removed.
A lock file held by the training process (`fcntl.flock`, released by the kernel when the process
ends, however it ends) keeps a second process out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
import typing
from pathlib import Path
from typing import Any

import yaml

from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore
from metagrad.config import Config, config_from_dict, dump_yaml, flatten
from metagrad.errors import CheckpointError, ConfigError

CONFIG_FILE = "config.yaml"
MARKER_FILE = ".metagrad-run"
LOCK_FILE = ".metagrad-lock"
RUN_ENTRIES = (CONFIG_FILE, "metrics.jsonl", "tensorboard", CHECKPOINT_DIR, "plots")
"""What training writes in a run folder besides the marker and the lock; `eval-*.json` too."""
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


def check_run_dir(
    run_dir: Path, config: Config, *, resume: bool, overwrite: bool
) -> dict[str, Any] | None:
    """Refuse a folder that holds another run, or a resume that would change the run.

    Returns the checkpoint to resume from: None for a new run, and for a `resume` of a run
    stopped before its first checkpoint, which then starts afresh in its folder.
    """
    check_not_in_use(run_dir)
    return _check_folder(run_dir, config, resume=resume, overwrite=overwrite)


def _check_folder(
    run_dir: Path, config: Config, *, resume: bool, overwrite: bool
) -> dict[str, Any] | None:
    if resume:
        state = resume_state(run_dir, config)
        check_writable(run_dir)
        return state
    if run_dir.exists() and not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is a file, not a folder; choose another --run-dir")
    if run_dir.is_symlink() and overwrite:
        raise CheckpointError(
            f"--overwrite: {run_dir} is a symbolic link; metagrad replaces only a run folder "
            f"itself. Pass the folder it points to ({run_dir.resolve()}) or another --run-dir"
        )
    if not _contents(run_dir):
        _check_creatable(run_dir)
        return None
    if not is_run_folder(run_dir):
        raise CheckpointError(
            f"{run_dir} is not empty and is not a metagrad run folder (it has no {MARKER_FILE}); "
            "refusing to use or replace it. Choose another --run-dir"
        )
    if not CheckpointStore(run_dir / CHECKPOINT_DIR).any_paths() and not overwrite:
        raise CheckpointError(
            f"run folder {run_dir} holds a run stopped before its first checkpoint; pass "
            "--resume to start it again there, --overwrite to replace it, or --run-dir to "
            "choose another folder"
        )
    if not overwrite:
        raise CheckpointError(
            f"run folder {run_dir} already holds a run; pass --resume to continue it, "
            "--overwrite to replace it, or --run-dir to choose another folder"
        )
    refuse_to_replace(run_dir)
    check_writable(run_dir)
    return None


def _check_creatable(run_dir: Path) -> None:
    """A new run's folder can be made: its nearest existing ancestor is a writable folder."""
    ancestor = next(p for p in (run_dir, *run_dir.parents) if p.exists())
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
        raise CheckpointError(
            f"cannot create run folder {run_dir}: {ancestor} is not a writable folder; choose "
            "another --run-dir"
        )


def resume_state(run_dir: Path, config: Config) -> dict[str, Any] | None:
    """The newest complete checkpoint of the run in `run_dir`, checked against `config`."""
    saved = saved_config(run_dir)
    store = CheckpointStore(run_dir / CHECKPOINT_DIR)
    if not store.any_paths():
        check_resumable(saved, config, run_dir)
        return None
    state = store.latest()
    check_resumable(_checkpoint_config(state, run_dir), config, run_dir)
    return state


def _checkpoint_config(state: dict[str, Any], run_dir: Path) -> Config:
    try:
        return config_from_dict(state["config"])
    except (KeyError, ConfigError) as err:
        raise CheckpointError(
            f"the checkpoint of step {state.get('step')} in {run_dir} holds no valid config "
            f"({err}); it cannot be resumed safely. Start a new run in another --run-dir"
        ) from err


def is_run_folder(run_dir: Path) -> bool:
    return (run_dir / MARKER_FILE).is_file()


def refuse_to_replace(run_dir: Path) -> None:
    """Never replace the working folder, one that contains it, the home folder or a root."""
    target = run_dir.resolve()
    cwd = Path.cwd().resolve()
    protected = {cwd, *cwd.parents, Path.home().resolve(), Path(target.anchor)}
    if target in protected:
        raise CheckpointError(
            f"--overwrite: {run_dir} is the working folder, one that contains it, the home folder "
            "or a root; metagrad never replaces it. Choose a run folder inside it with --run-dir"
        )


def check_writable(folder: Path) -> None:
    """Fail before any compute when results could not be saved in `folder`."""
    if folder.is_dir() and os.access(folder, os.W_OK):
        try:
            with tempfile.TemporaryFile(dir=folder):
                return
        except OSError as err:
            reason = err.strerror or str(err)
    else:
        reason = "not writable" if folder.is_dir() else "not a folder"
    raise CheckpointError(
        f"{folder} is {reason}; nothing was changed. Make it writable (or free space), or copy "
        "the run elsewhere and use that copy"
    )


def init_run_dir(
    run_dir: Path, config: Config, *, resume: bool, overwrite: bool, hold: contextlib.ExitStack
) -> dict[str, Any] | None:
    """Create or reuse the folder, lock it for as long as `hold` lasts, then check it again
    under the lock (another process may have started meanwhile) and record the config.

    Returns the checkpoint to resume from, as `check_run_dir`.
    """
    try:
        run_dir.mkdir(parents=True)
        _write_marker(run_dir)
    except FileExistsError:
        pass
    except OSError as err:
        raise CheckpointError(
            f"cannot create run folder {run_dir}: {err.strerror or err}; choose another --run-dir"
        ) from err
    hold.enter_context(RunLock(run_dir))
    state = _check_folder(run_dir, config, resume=resume, overwrite=overwrite)
    if overwrite and not resume:
        _clear_run(run_dir)
    try:
        if not is_run_folder(run_dir):
            _write_marker(run_dir)
        replace_text(run_dir / CONFIG_FILE, dump_yaml(config))
    except OSError as err:
        raise CheckpointError(
            f"cannot write in run folder {run_dir}: {err.strerror or err}; nothing was lost. "
            "Free disk space or make it writable, then start again"
        ) from err
    return state


def replace_text(path: Path, text: str) -> None:
    """Write a file whole or not at all: a full disk leaves the previous one."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _contents(run_dir: Path) -> list[Path]:
    """What a folder holds besides metagrad's marker and lock: nothing in a new run folder."""
    if not run_dir.is_dir():
        return []
    return [p for p in run_dir.iterdir() if p.name not in (MARKER_FILE, LOCK_FILE)]


def _write_marker(run_dir: Path) -> None:
    info = {"metagrad_run": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    replace_text(run_dir / MARKER_FILE, json.dumps(info) + "\n")


def _clear_run(run_dir: Path) -> None:
    """Remove what metagrad wrote in a run folder; anything else in it stays."""
    for name in RUN_ENTRIES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for path in run_dir.glob("eval-*.json"):
        path.unlink()


def check_not_in_use(run_dir: Path) -> None:
    """Refuse a folder another process holds, before any compute; the lock is taken later."""
    if (run_dir / LOCK_FILE).is_file():
        with (run_dir / LOCK_FILE).open() as stream:
            RunLock.acquire(stream)
            fcntl.flock(stream, fcntl.LOCK_UN)


class RunLock:
    """An exclusive `flock` on the run folder's lock file, naming its holder to whoever waits."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self.stream = None

    def __enter__(self) -> RunLock:
        try:
            stream = self.path.open("a+")
        except OSError as err:
            raise CheckpointError(
                f"cannot lock run folder {self.path.parent}: {err.strerror or err}; make it "
                "writable, or choose another --run-dir"
            ) from err
        try:
            RunLock.acquire(stream)
        except CheckpointError:
            stream.close()
            raise
        with contextlib.suppress(OSError):  # naming the holder is a courtesy, not a need
            stream.seek(0)
            stream.truncate()
            stream.write(f"process {os.getpid()} on {socket.gethostname()}\n")
            stream.flush()
        self.stream = stream
        return self

    @staticmethod
    def acquire(stream: typing.IO) -> None:
        """Lock the open lock file `stream`, or say who holds it."""
        try:
            fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            stream.seek(0)
            holder = stream.read().strip() or "another process"
            folder = Path(stream.name).parent
            raise CheckpointError(
                f"{folder} is in use by {holder}; wait for it to finish or stop it, or choose "
                "another folder"
            ) from None

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.stream, fcntl.LOCK_UN)
        self.stream.close()


def saved_config(run_dir: Path) -> Config:
    """The config recorded in a run folder; a folder without one is not a run folder."""
    path = run_dir / CONFIG_FILE
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist; give the folder of a run")
    if not path.is_file():
        raise CheckpointError(
            f"{run_dir} is not a run folder: it has no {CONFIG_FILE}; give the folder of a run"
        )
    try:
        return config_from_dict(yaml.safe_load(path.read_text()))
    except (ConfigError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not a valid run config: {err}") from err


def check_resumable(saved: Config, new: Config, run_dir: Path) -> None:
    """Refuse to resume with a config that changes what is being learned (n_way, model, ...)."""
    before, after = flatten(saved.to_dict()), flatten(new.to_dict())
    changed = [
        key
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key) and not key.startswith(RESUMABLE_CHANGES)
    ]
    if changed:
        key = changed[0]
        raise CheckpointError(
            f"--resume: {key} = {after.get(key)!r} but the run in {run_dir} was started with "
            f"{before.get(key)!r} ({len(changed)} such field(s): {', '.join(changed)}); resume "
            "with the run's own settings, or start a new run folder"
        )
