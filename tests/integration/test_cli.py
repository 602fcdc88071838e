"""The `metagrad` command, run as a user runs it: in a subprocess."""

import json
import subprocess
import sys

import pytest

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
    assert {"config.yaml", "metrics.jsonl", "tensorboard", "checkpoints", "eval-test.json"} <= {
        p.name for p in maml.iterdir()
    }
    lines = [json.loads(line) for line in (maml / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["split"] == "train"] == [20, 40, 60]
    assert [r["step"] for r in lines if r["split"] == "val"] == [30, 60]

    done = metagrad(
        "eval", str(maml), "--checkpoint", "last", "--set", "eval.inner_steps=5", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((maml / "eval-test.json").read_text())
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
        (["eval", "runs/absent"], 2, "does not exist"),
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
