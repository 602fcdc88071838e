import errno
import os

import pytest
import torch

from metagrad import checkpoint as checkpoint_module
from metagrad.checkpoint import CheckpointStore, load_checkpoint
from metagrad.errors import CheckpointError


def state(step):
    return {"step": step, "weights": torch.full((3,), float(step))}


def test_keeps_the_newest_and_one_of_every_other_kind(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for step in range(5):
        store.save("step", step, state(step))
        store.save("best", step, state(step))
    store.save("time-300s", 4, state(4))
    assert [store.load("last")["step"], store.load("best")["step"]] == [4, 4]
    assert len(store.paths("step")) == 2 and len(store.paths("best")) == 1
    assert store.load("time-300s")["step"] == 4
    assert all(load_checkpoint(p)["step"] in (3, 4) for p in store.paths("step"))


class FullDisk:
    """A file object that takes half the bytes, then reports a full disk."""

    def __init__(self, real):
        self.real = real

    def write(self, data):
        self.real.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def test_a_write_that_fails_halfway_leaves_the_previous_checkpoint_and_no_temporary(
    tmp_path, monkeypatch
):
    store = CheckpointStore(tmp_path)
    store.save("step", 1, state(1))
    real_fdopen = os.fdopen
    monkeypatch.setattr(checkpoint_module.os, "fdopen", lambda *a: FullDisk(real_fdopen(*a)))
    with pytest.raises(CheckpointError, match=r"No space left on device.*previous checkpoints"):
        store.save("step", 2, state(2))
    monkeypatch.undo()
    assert store.load("last")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [store.paths("step")[0].name]


def test_a_read_only_folder_is_a_clear_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(checkpoint_module.tempfile, "mkstemp", refuse)
    with pytest.raises(CheckpointError, match=r"Permission denied.*writable"):
        CheckpointStore(tmp_path).save("step", 1, state(1))


def test_damage_is_detected_and_nothing_usable_is_an_error(tmp_path):
    store = CheckpointStore(tmp_path)
    path = store.save("step", 7, state(7))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum does not match"):
        load_checkpoint(path)
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="every last checkpoint"):
        store.load("last")
    with pytest.raises(CheckpointError, match="holds no best checkpoint"):
        store.load("best")


def test_leftover_temporary_files_are_removed(tmp_path):
    (tmp_path / ".step-00000001-0123456789abcdef.pt.x1y2.tmp").write_bytes(b"partial")
    CheckpointStore(tmp_path).remove_temporary()
    assert not list(tmp_path.iterdir())


def test_saving_a_step_again_replaces_the_file_of_that_step(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    store.save("step", 1, state(1))
    store.save("step", 2, state(2))
    store.save("step", 2, {**state(2), "note": "again"})
    assert len(store.paths("step")) == 2
    assert store.load("last")["note"] == "again"


def test_resume_falls_back_to_any_intact_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path)
    for step in (1, 2):
        store.save("step", step, state(step))
    store.save("best", 2, {**state(2), "kind": "best"})
    for path in store.paths("step"):
        path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning), pytest.raises(CheckpointError) as error:
        store.load("last")
    assert "--checkpoint (best)" in str(error.value) and "--overwrite" not in str(error.value)
    with pytest.warns(UserWarning, match="checksum"):
        assert store.latest()["kind"] == "best"


def test_a_damaged_best_points_to_the_last_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save("step", 3, state(3))
    best = store.save("best", 2, state(2))
    best.write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match=r"--checkpoint \(last\)"):
        store.load("best")


def test_nothing_intact_is_an_error_that_keeps_the_files(tmp_path):
    store = CheckpointStore(tmp_path)
    path = store.save("step", 1, state(1))
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="left as they are"):
        store.latest()
    assert path.read_bytes() == b"garbage"


def test_checkpoint_files_respect_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        path = CheckpointStore(tmp_path).save("step", 1, state(1))
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
