"""The metrics file survives a torn last line, names damage elsewhere, and TensorBoard keeps
the scalars of the step a run resumes from."""

import errno
import json
import os

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from metagrad.errors import CheckpointError
from metagrad.logging import METRICS_FILE, RunLogger, read_metrics


def write_lines(path, steps):
    path.write_text(
        "".join(json.dumps({"step": s, "split": "train", "loss": 1.0}) + "\n" for s in steps)
    )


def test_a_torn_last_line_is_dropped_with_a_warning(tmp_path):
    path = tmp_path / METRICS_FILE
    write_lines(path, [1, 2, 3])
    os.truncate(path, path.stat().st_size - 10)
    with pytest.warns(UserWarning, match="incomplete last line 3"):
        assert [r["step"] for r in read_metrics(path)] == [1, 2]


def test_damage_before_the_last_line_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / METRICS_FILE
    write_lines(path, [1, 2, 3])
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:-5]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CheckpointError, match="damaged at line 2"):
        read_metrics(path)
    path.write_text('{"step": 1, "split": "train"}\n[1, 2]\n{"step": 3, "split": "val"}\n')
    with pytest.raises(CheckpointError, match="line 2 is not a metrics record"):
        read_metrics(path)


def test_resuming_rewrites_the_file_without_the_torn_line(tmp_path):
    path = tmp_path / METRICS_FILE
    write_lines(path, [1, 2, 3])
    os.truncate(path, path.stat().st_size - 10)
    with pytest.warns(UserWarning):
        RunLogger(tmp_path, resume_step=2).close()
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


def scalars(run_dir, tag):
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def test_tensorboard_keeps_the_scalars_of_the_resumed_step(tmp_path):
    logger = RunLogger(tmp_path)
    for step in (1, 2, 3):
        logger.log(step, "train", {"loss": float(step)})
    logger.close()
    logger = RunLogger(tmp_path, resume_step=2)  # step 3 is logged again, step 2 is not
    logger.log(3, "train", {"loss": 3.0})
    logger.close()
    assert scalars(tmp_path, "train/loss") == [1, 2, 3]


def test_a_full_disk_while_logging_is_a_clear_error(tmp_path, monkeypatch):
    logger = RunLogger(tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(logger.writer, "add_scalar", full)
    with pytest.raises(CheckpointError, match=r"No space left on device.*--resume"):
        logger.log(1, "train", {"loss": 1.0})
