"""The `metagrad` command, run as a user runs it: in a subprocess."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from metagrad.checkpoint import CheckpointStore

TINY = [
    "--set",
    "train.iterations=60",
    "train.val_every=30",
    "train.val_tasks=20",
    "train.log_every=20",
    "eval.num_tasks=30",
    "eval.inner_steps=3",
]


def metagrad(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "metagrad", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_train_eval_plot(tmp_path):
    for preset in ("maml-sinusoid-5shot", "pretrain-sinusoid-5shot"):
        done = metagrad("train", preset, *TINY, "--no-progress", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "test tasks (30)" in done.stdout
    maml, pretrain = (
        tmp_path / "runs/maml-sinusoid-5shot",
        tmp_path / "runs/pretrain-sinusoid-5shot",
    )
    assert {
        "config.yaml",
        "metrics.jsonl",
        "tensorboard",
        "checkpoints",
        "eval-test-best-5shot-3steps.json",
    } <= {p.name for p in maml.iterdir()}
    lines = [json.loads(line) for line in (maml / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["split"] == "train"] == [20, 40, 60]
    assert [r["step"] for r in lines if r["split"] == "val"] == [30, 60]

    done = metagrad(
        "eval", str(maml), "--checkpoint", "last", "--set", "eval.inner_steps=5", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "saved " + str(maml / "eval-test-last-5shot-5steps.json") in done.stdout
    result = json.loads((maml / "eval-test-last-5shot-5steps.json").read_text())
    assert result["num_tasks"] == 30 and len(result["mean"]["mse"]) == 6 and result["step"] == 60

    done = metagrad("plot", str(maml), str(pretrain), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for name in ("learning-curves.png", "metric-vs-steps.png", "sinusoid-fits.png"):
        assert (maml / "plots" / name).stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["train", "maml-sinusoid-5shot", "--set", "train.meta_batch_size=-4"],
            2,
            "train.meta_batch_size = -4 must be > 0",
        ),
        (["train", "no-such-preset"], 2, "unknown preset 'no-such-preset'"),
        (["eval", "runs/absent"], 4, "does not exist"),
    ],
)
def test_bad_input_fails_fast_with_exit_code_and_message(tmp_path, args, code, message):
    done = metagrad(*args, cwd=tmp_path)
    assert done.returncode == code
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


def test_an_existing_run_is_never_overwritten_silently(tmp_path):
    args = ["train", "maml-sinusoid-5shot", *TINY, "--no-progress", "--run-dir", "run"]
    assert metagrad(*args, cwd=tmp_path).returncode == 0
    done = metagrad(*args, cwd=tmp_path)
    assert done.returncode == 4 and "already holds a run" in done.stderr
    assert metagrad(*args, "--overwrite", cwd=tmp_path).returncode == 0


SIGNAL_RUN = [
    "train",
    "maml-sinusoid-5shot",
    "--no-progress",
    "--set",
    "train.iterations=1500",
    "train.log_every=50",
    "train.val_every=500",
    "train.val_tasks=20",
    "eval.num_tasks=20",
    "train.strategy=batched",  # `auto` picks by timing, and strategies round differently
]


def start_and_signal(tmp_path, run_dir, *signals):
    """Start a training subprocess, wait until it is training, then send `signals`."""
    process = subprocess.Popen(
        [sys.executable, "-m", "metagrad", *SIGNAL_RUN, "--run-dir", run_dir],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for sig in signals:
        process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_and_exits_and_resume_ends_where_the_whole_run_ends(tmp_path, sig):
    assert metagrad(*SIGNAL_RUN, "--run-dir", "whole", cwd=tmp_path).returncode == 0
    code, stderr = start_and_signal(tmp_path, "split", sig)
    assert code == 128 + sig, stderr
    assert (
        f"stopped by {signal.Signals(sig).name}" in stderr
        and "metagrad train --resume split" in stderr
    )
    stopped_at = CheckpointStore(tmp_path / "split/checkpoints").load("last")["step"]
    assert 0 < stopped_at < 1500
    done = metagrad("train", "--resume", "split", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    whole, split = (
        CheckpointStore(tmp_path / r / "checkpoints").load("last") for r in ("whole", "split")
    )
    for name in whole["model"]:
        assert torch.equal(whole["model"][name], split["model"][name]), name
    assert (tmp_path / "whole/metrics.jsonl").read_text() == (
        tmp_path / "split/metrics.jsonl"
    ).read_text()


def test_a_second_signal_aborts_at_once_and_leaves_a_complete_checkpoint(tmp_path):
    code, _ = start_and_signal(tmp_path, "run", signal.SIGINT, signal.SIGINT)
    assert code == 128 + signal.SIGINT
    store = CheckpointStore(tmp_path / "run/checkpoints")
    assert store.load("last")["step"] >= 0
    assert not list((tmp_path / "run/checkpoints").glob(".*.tmp"))


@pytest.mark.parametrize(
    ("overrides", "code", "message"),
    [
        (["task.n_way=5000"], 2, "task.n_way = 5000 but the train split has only 4400 classes"),
        (["task.k_shot=15", "task.n_query=10"], 2, "k_shot + n_query = 15 + 10 = 25"),
        (["task.data_root=missing-folder"], 3, "missing-folder"),
        (["task.class_split=nope"], 2, "nope"),
    ],
)
def test_bad_omniglot_requests_fail_before_training(
    tmp_path, omniglot_root, overrides, code, message
):
    root = [f"task.data_root={omniglot_root}"]
    done = metagrad("train", "maml-omniglot-5w1s", "--set", *root, *overrides, cwd=tmp_path)
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


def test_bench_runs_each_approach_in_its_own_process_and_checks_gradients(tmp_path):
    out = tmp_path / "bench.jsonl"
    done = metagrad(
        "bench", "sinusoid", "--repeats", "2", "--warmup", "1",
        "--approach", "loop", "batched", "sampler", "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "### sinusoid" in done.stdout and "| batched |" in done.stdout
    rows = {row["approach"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert rows["batched"]["grad_rel_error"] < 1e-8
    assert {rows[a]["pid"] for a in ("loop", "batched")} != {rows["loop"]["pid"]}
    assert rows["sampler"]["share_of_fastest_step"] > 0


def test_bench_rejects_unknown_settings_and_approaches(tmp_path):
    done = metagrad("bench", "omniglot-99w", cwd=tmp_path)
    assert done.returncode == 2 and "metagrad bench --list" in done.stderr
    done = metagrad("bench", "sinusoid", "--approach", "jax", cwd=tmp_path)
    assert done.returncode == 2 and "unknown benchmark approach 'jax'" in done.stderr
