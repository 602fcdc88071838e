"""`metagrad sweep` and `metagrad report` end to end on tiny sinusoid runs: every cell trained
and evaluated, a second run skips finished cells, an interrupted sweep resumes its cell to the
same result as an uninterrupted one, failures and memory skips are recorded, nothing of a
user's is written over."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from metagrad.errors import CheckpointError, MemoryBudgetError
from metagrad.report import write_report
from metagrad.sweeps import cell as cell_module
from metagrad.sweeps.folder import SweepFolder
from metagrad.sweeps.runner import run_sweep
from metagrad.sweeps.spec import grid_sweep, identity

BASE = "maml-sinusoid-5shot"
SETTINGS = [
    "train.iterations=20",
    "train.meta_batch_size=4",
    "train.log_every=5",
    "train.val_every=10",
    "train.ckpt_every=5",
    "train.val_tasks=5",
    "eval.num_tasks=10",
    "eval.inner_steps=3",
]
AXES = ["algorithm.inner_steps=1,2"]


def sweep(out, *extra, env=None, wait=True):
    args = [sys.executable, "-m", "metagrad", "sweep", BASE, *AXES, *extra, "--out", str(out)]
    args += ["--no-progress", "--set", *SETTINGS]
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if not wait:
        return process
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def summary(folder):
    with (folder / "summary.csv").open() as stream:
        return list(csv.DictReader(stream))


def test_a_sweep_runs_every_cell_once_and_reports(tmp_path):
    out = tmp_path / "sweep"
    code, stdout, stderr = sweep(out)
    assert code == 0, stderr
    rows = summary(out)
    assert [r["algorithm.inner_steps"] for r in rows] == ["1", "2"]
    assert {r["status"] for r in rows} == {"finished"}
    for row in rows:
        assert row["metric"] == "mse" and int(row["steps"]) == 20 and int(row["peak_memory"]) > 0
        assert float(row["post"]) < float(row["pre"])  # adaptation lowers the test error
    assert "2 finished" in stdout
    lines = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    assert [r["cell"] for r in lines] == [r["cell"] for r in rows]

    outcomes = {p: p.stat().st_mtime_ns for p in (out / "outcomes").iterdir()}
    code, stdout, _ = sweep(out)
    assert code == 0 and "2 finished already, 0 to run" in stdout
    assert {p: p.stat().st_mtime_ns for p in (out / "outcomes").iterdir()} == outcomes
    assert all(len(list((out / "runs" / r["cell"]).glob("eval-*.json"))) == 1 for r in rows)

    report = write_report([out], tmp_path / "report")
    text = report.read_text()
    assert "`algorithm.inner_steps`" in text and all(r["cell"] in text for r in rows)
    for name in ("metric-vs-settings", "pre-post-steps", "learning-curves", "time-and-memory"):
        assert (tmp_path / "report" / f"{name}.png").stat().st_size > 10_000
        assert f"({name}.png)" in text


def test_an_interrupted_sweep_resumes_its_cell_to_the_same_result(tmp_path):
    out = tmp_path / "interrupted"
    process = sweep(out, env={"METAGRAD_CHECKPOINT_PAUSE": "0.3"}, wait=False)
    deadline = time.monotonic() + 120
    while len(list((out / "runs").glob("*/checkpoints/*.pt"))) < 3:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert "stopped by SIGINT" in stderr
    assert [r["status"] for r in summary(out)] == ["interrupted", "pending"]

    code, stdout, stderr = sweep(out)
    assert code == 0, stderr
    assert "0 finished already, 2 to run" in stdout
    first = summary(out)[0]
    log = (out / "logs" / f"{first['cell']}.log").read_text()
    assert [int(s) > 0 for s in re.findall(r"training from step (\d+)", log)] == [False, True]

    code, _, stderr = sweep(tmp_path / "uninterrupted")
    assert code == 0, stderr
    for resumed, whole in zip(summary(out), summary(tmp_path / "uninterrupted"), strict=True):
        assert resumed["cell"] == whole["cell"]
        for key in ("pre", "post", "post_ci95", "best_val"):
            assert resumed[key] == whole[key]


def test_a_failed_cell_is_recorded_and_the_others_run(tmp_path):
    out = tmp_path / "sweep"
    args = [sys.executable, "-m", "metagrad", "sweep", BASE, "train.outer_lr=0.001,1.0e+12"]
    args += ["--out", str(out), "--no-progress", "--set", *SETTINGS, "--wandb", "metagrad-test"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}  # no network here
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1, done.stderr
    rows = {r["status"]: r for r in summary(out)}
    assert set(rows) == {"finished", "failed"} and "non-finite" in rows["failed"]["message"]
    assert float(rows["failed"]["train.outer_lr"]) == 1e12
    assert "1 finished, 1 failed" in done.stdout

    # the finished run was logged to W&B offline: its config, the sweep as group, its metrics
    [logged] = (out / "runs" / rows["finished"]["cell"]).glob("wandb/offline-run-*/*.wandb")
    content = logged.read_bytes()
    for expected in (b"algorithm.inner_steps", b"val/post_mse", b"test/post_mse", b"sweep"):
        assert expected in content
    assert not (out / "runs" / rows["failed"]["cell"] / "wandb").exists()


def test_a_cell_that_does_not_fit_is_recorded_as_skipped_with_its_need(tmp_path, monkeypatch):
    folder = SweepFolder(tmp_path / "sweep")
    sweep = grid_sweep(BASE, AXES, SETTINGS)
    folder.create()
    [(cell, config), _] = sweep.resolved()
    name = identity(config)
    folder.add({name: (cell.values, config)})

    def too_big(*args, **kwargs):
        raise MemoryBudgetError("a meta-step needs at least 3.00 GiB", needed=3 * 2**30)

    monkeypatch.setattr(cell_module, "fit", too_big)
    assert cell_module.run_cell(folder, name) == 0
    [row] = folder.write_summary()
    assert row["status"] == "skipped" and row["needed_memory"] == 3 * 2**30
    assert "3.00 GiB" in row["message"]


def test_a_folder_that_is_not_a_sweep_is_never_written(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(CheckpointError, match="not a metagrad sweep folder"):
        run_sweep(grid_sweep(BASE, AXES, SETTINGS), SweepFolder(mine), progress=False)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_cli_refuses_a_bad_sweep_before_anything_runs(tmp_path):
    out = tmp_path / "sweep"
    args = [sys.executable, "-m", "metagrad", "sweep", BASE, "algorithm.inner_stpes=1,2"]
    done = subprocess.run([*args, "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 2 and "inner_stpes" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
