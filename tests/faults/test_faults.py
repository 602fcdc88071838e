"""Faults injected into training, resuming and evaluating: kills at random points (inside a
checkpoint write too), torn and damaged files of every kind, a read-only folder, a full disk,
two processes. Each is survived with nothing lost, and the run, continued, equals the
uninterrupted one bit for bit. `FAULTS` is the figure the README gives."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
from faultkit import PRESET, SETTINGS, assert_same_run, remount, resume, snapshot

from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore
from metagrad.errors import CheckpointError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def start(run, pause):
    """`metagrad train` in its own process, pausing `pause` s inside every checkpoint write."""
    env = {**os.environ, "METAGRAD_CHECKPOINT_PAUSE": str(pause)}
    args = ["train", PRESET, "--set", *SETTINGS, "--run-dir", str(run), "--no-progress"]
    return subprocess.Popen(
        [sys.executable, "-m", "metagrad", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def logged_lines(run):
    path = run / "metrics.jsonl"
    return path.read_text().count("\n") if path.is_file() else 0


def kill_after_lines(lines):
    def fault(tmp_path, reference, partial):
        run = tmp_path / "killed"
        process = start(run, pause=0.1)
        wait_for(lambda: logged_lines(run) >= lines, process)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
        resume(run)  # the killed process's lock does not block
        assert_same_run(reference, run)

    return fault


def kill_inside_a_checkpoint_write(tmp_path, reference, partial):
    run = tmp_path / "killed"
    process = start(run, pause=1.0)
    folder = run / CHECKPOINT_DIR
    wait_for(lambda: logged_lines(run) >= 3 and list(folder.glob(".*.tmp")), process)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert list(folder.glob(".*.tmp"))  # killed between writing and renaming
    resume(run)
    assert not list(folder.glob(".*.tmp"))
    assert_same_run(reference, run)


def torn_metrics_line(tmp_path, reference, partial, cli):
    """As a kill while writing the step-20 validation line leaves it: no step-20 checkpoint."""
    os.truncate(partial / "metrics.jsonl", (partial / "metrics.jsonl").stat().st_size - 40)
    assert cli("plot", partial).code == 0
    for path in (partial / CHECKPOINT_DIR).glob("*-00000020-*.pt"):
        path.unlink()
    resume(partial)
    assert_same_run(reference, partial)


def damage_newest_step(how):
    def fault(tmp_path, reference, partial):
        newest = CheckpointStore(partial / CHECKPOINT_DIR).paths("step")[0]
        newest.write_bytes(how(newest.read_bytes()))
        resume(partial)
        assert_same_run(reference, partial)

    return fault


def flip_a_bit(data):
    return data[:100] + bytes([data[100] ^ 1]) + data[101:]


def every_step_checkpoint_damaged(tmp_path, reference, partial, cli):
    store = CheckpointStore(partial / CHECKPOINT_DIR)
    for path in store.paths("step"):
        path.write_bytes(path.read_bytes()[:-10])
    done = cli("train", "--resume", partial, "--set", "train.iterations=40", "--no-progress")
    assert done.code == 0, done.err  # from the intact best or time checkpoint
    assert_same_run(reference, partial)


def damaged_best(tmp_path, reference, partial, cli):
    best = CheckpointStore(partial / CHECKPOINT_DIR).paths("best")[0]
    best.write_bytes(flip_a_bit(best.read_bytes()))
    done = cli("eval", partial, "--checkpoint", "best")
    assert done.code == 4 and "--checkpoint (last" in done.err
    resume(partial)
    assert_same_run(reference, partial)


def damaged_time_snapshot(tmp_path, reference, partial, cli):
    (snapshot_file,) = CheckpointStore(partial / CHECKPOINT_DIR).paths("time-0.0001s")
    snapshot_file.write_bytes(b"")
    done = cli("eval", partial, "--checkpoint", "time-0.0001s")
    assert done.code == 4 and "every time-0.0001s checkpoint" in done.err
    assert "best" in done.err and "last" in done.err
    resume(partial)
    assert_same_run(reference, partial)


def leftover_temporary_file(tmp_path, reference, partial):
    leftover = partial / CHECKPOINT_DIR / ".step-00000025-0123456789abcdef.pt.x.tmp"
    leftover.write_bytes(b"partial")
    resume(partial)
    assert not leftover.exists()
    assert_same_run(reference, partial)


def checkpoint_folder_deleted(tmp_path, reference, partial):
    shutil.rmtree(partial / CHECKPOINT_DIR)
    resume(partial)  # a fresh start in the same folder
    assert_same_run(reference, partial)


def stopped_before_the_first_checkpoint(tmp_path, reference, partial, cli):
    for name in (CHECKPOINT_DIR, "tensorboard"):
        shutil.rmtree(partial / name)
    (partial / "metrics.jsonl").unlink()
    args = ["train", PRESET, "--set", *SETTINGS, "--run-dir", partial, "--no-progress"]
    done = cli(*args)
    assert done.code == 4 and "--resume" in done.err
    assert cli(*args, "--resume").code == 0
    assert_same_run(reference, partial)


def read_only_folder(tmp_path, reference, partial, cli, tmpfs):
    run = shutil.copytree(partial, tmpfs("16m") / "run")
    remount(run.parent, "ro")
    before = snapshot(run)
    for args in (["train", "--resume", run], ["eval", run]):
        done = cli(*args)
        assert done.code == 4 and "Traceback" not in done.err, done.err
        assert "loading" not in done.out  # refused before any compute
    assert snapshot(run) == before
    remount(run.parent, "rw")
    resume(run)
    assert_same_run(reference, run)


def fill(folder, leave=0):
    """Take every free byte of the file system of `folder` but `leave`."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as stream:
        try:
            while True:
                stream.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(filler, max(filler.stat().st_size - leave, 0))
    return filler


def full_disk_while_training(tmp_path, reference, partial, cli, tmpfs):
    run = shutil.copytree(partial, tmpfs("2m") / "run")
    filler = fill(run.parent, leave=24 * 1024)  # room to start, not for a checkpoint
    done = cli("train", "--resume", run, "--set", "train.iterations=40", "--no-progress")
    assert done.code == 4 and "No space left on device" in done.err, done.err
    assert CheckpointStore(run / CHECKPOINT_DIR).latest()["step"] >= 20
    logged = (partial / "metrics.jsonl").read_text()
    assert (run / "metrics.jsonl").read_text().startswith(logged)
    filler.unlink()
    resume(run)
    assert_same_run(reference, run)


def full_disk_while_evaluating(tmp_path, reference, partial, cli, tmpfs):
    run = shutil.copytree(partial, tmpfs("2m") / "run")
    filler = fill(run.parent)
    done = cli("eval", run)
    assert done.code == 4 and "No space left on device" in done.err, done.err
    assert not list(run.glob("eval-*.json"))
    filler.unlink()
    assert cli("eval", run).code == 0


def two_processes(tmp_path, reference, partial, cli):
    run = tmp_path / "shared"
    first = start(run, pause=0.2)
    wait_for(lambda: logged_lines(run) >= 1, first)
    for extra in ([], ["--resume"], ["--overwrite"]):
        done = cli("train", PRESET, "--set", *SETTINGS, "--run-dir", run, *extra)
        assert done.code == 4 and f"in use by process {first.pid}" in done.err, done.err
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert_same_run(reference, run)  # no line written twice


KILL_POINTS = sorted(random.Random(11).sample(range(1, 12), 3))
FAULTS = {
    **{f"SIGKILL after {n} metrics lines": kill_after_lines(n) for n in KILL_POINTS},
    "SIGKILL inside a checkpoint write": kill_inside_a_checkpoint_write,
    "torn last metrics line": torn_metrics_line,
    "newest checkpoint truncated": damage_newest_step(lambda data: data[: len(data) // 2]),
    "newest checkpoint with a flipped bit": damage_newest_step(flip_a_bit),
    "newest checkpoint empty": damage_newest_step(lambda data: b""),
    "every periodic checkpoint damaged": every_step_checkpoint_damaged,
    "best checkpoint damaged": damaged_best,
    "time snapshot damaged": damaged_time_snapshot,
    "temporary file left by a kill": leftover_temporary_file,
    "checkpoint folder deleted": checkpoint_folder_deleted,
    "stopped before the first checkpoint": stopped_before_the_first_checkpoint,
    "read-only run folder": read_only_folder,
    "full disk while training": full_disk_while_training,
    "full disk while evaluating": full_disk_while_evaluating,
    "two processes on one run folder": two_processes,
}


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_is_survived_with_nothing_lost(fault, request, tmp_path, reference, partial):
    inject = FAULTS[fault]
    wanted = inject.__code__.co_varnames[: inject.__code__.co_argcount]
    extra = {name: request.getfixturevalue(name) for name in wanted[3:]}
    inject(tmp_path, reference, partial, **extra)


def test_a_checkpoint_error_names_no_destructive_fix(partial):
    for path in (partial / CHECKPOINT_DIR).iterdir():
        path.write_bytes(b"damaged")
    with pytest.raises(CheckpointError) as error:
        resume(partial)
    assert "--overwrite" not in str(error.value)
    assert sorted(p.read_bytes() for p in (partial / CHECKPOINT_DIR).iterdir()) == [
        b"damaged"
    ] * len(list((partial / CHECKPOINT_DIR).iterdir()))
