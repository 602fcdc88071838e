"""Meta-training end to end, in process: it learns, it is deterministic, it resumes exactly."""

import json

import pytest
import torch

from metagrad import train as train_module
from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore
from metagrad.config import load_config
from metagrad.errors import CheckpointError, NonFiniteError
from metagrad.evaluate import evaluate_run
from metagrad.train import fit

SHORT = [
    "train.val_every=100",
    "train.val_tasks=50",
    "train.log_every=50",
    "eval.num_tasks=200",
    "eval.inner_steps=1",
]


def short_config(*overrides, iterations=200):
    return load_config(
        "maml-sinusoid-5shot", [*SHORT, f"train.iterations={iterations}", *overrides]
    )


def last_state(run_dir):
    return CheckpointStore(run_dir / CHECKPOINT_DIR).load("last")


def test_short_maml_training_halves_the_post_adaptation_mse(tmp_path):
    untrained = evaluate_run(fit(short_config(iterations=1), tmp_path / "a", progress=False))
    trained = evaluate_run(fit(short_config(iterations=2000), tmp_path / "b", progress=False))
    before, after = untrained["mean"]["mse"][1], trained["mean"]["mse"][1]
    assert after <= 0.5 * before, (before, after)


def test_same_seed_same_numbers_different_seed_different_numbers(tmp_path):
    runs = [  # a fixed strategy: `auto` picks by timing, and strategies round differently
        fit(
            short_config(f"train.seed={seed}", "train.strategy=batched"),
            tmp_path / f"{i}",
            progress=False,
        )
        for i, seed in enumerate([0, 0, 1])
    ]
    metrics = [(run / "metrics.jsonl").read_text() for run in runs]
    assert metrics[0] == metrics[1]
    assert metrics[0] != metrics[2]


def test_chunking_changes_only_float_rounding(tmp_path):
    whole = fit(short_config("train.strategy=vmap"), tmp_path / "whole", progress=False)
    chunked = fit(short_config("train.chunk_size=4"), tmp_path / "chunked", progress=False)
    a, b = last_state(whole)["model"], last_state(chunked)["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


def crash_at(monkeypatch, crash_step):
    """Make the outer loop die (as a killed process would) when it reaches `crash_step`."""
    check = train_module.nonfinite

    def crashing(step, *args):
        if step == crash_step:
            raise RuntimeError("simulated crash")
        return check(step, *args)

    monkeypatch.setattr(train_module, "nonfinite", crashing)
    return lambda: monkeypatch.setattr(train_module, "nonfinite", check)


@pytest.mark.parametrize(
    ("crash_step", "resumed_from"),
    [(30, 0), (120, 100), (101, 100)],
    ids=["before-the-first-checkpoint", "mid-interval", "right-after-an-evaluation"],
)
def test_resume_gives_the_uninterrupted_run_bit_for_bit(
    tmp_path, monkeypatch, crash_step, resumed_from
):
    config = short_config(  # a fixed strategy: `auto` picks by timing
        "train.ckpt_every=50", "train.val_every=50", "train.strategy=batched", iterations=150
    )
    whole = fit(config, tmp_path / "whole", progress=False)
    restore = crash_at(monkeypatch, crash_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(config, tmp_path / "split", progress=False)
    restore()
    assert last_state(tmp_path / "split")["step"] == resumed_from
    fit(config, tmp_path / "split", resume=True, progress=False)

    a, b = last_state(whole), last_state(tmp_path / "split")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert a["best"] == b["best"]
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])
    lines = [(p / "metrics.jsonl").read_text() for p in (whole, tmp_path / "split")]
    assert lines[0] == lines[1]


def test_resume_may_extend_the_run_but_not_change_what_it_learns(tmp_path):
    run = fit(short_config(iterations=100), tmp_path / "run", progress=False)
    fit(short_config(iterations=150), run, resume=True, progress=False)
    assert last_state(run)["step"] == 150
    with pytest.raises(
        CheckpointError, match=r"model.hidden = \[20, 20\] but the run .* \[40, 40\]"
    ):
        fit(short_config("model.hidden=[20,20]", iterations=200), run, resume=True)
    with pytest.raises(CheckpointError, match=r"algorithm.inner_lr"):
        fit(short_config("algorithm.inner_lr=0.02", iterations=200), run, resume=True)


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    run = fit(short_config("train.ckpt_every=50", iterations=150), tmp_path / "run", progress=False)
    store = CheckpointStore(run / CHECKPOINT_DIR)
    newest = store.paths("step")[0]
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    with pytest.warns(UserWarning, match="checksum does not match"):
        assert store.load("last")["step"] == 100
    with pytest.warns(UserWarning):
        fit(short_config("train.ckpt_every=50", iterations=150), run, resume=True, progress=False)
    assert store.load("last")["step"] == 150


def test_non_finite_loss_stops_with_the_step_and_the_tasks(tmp_path):
    config = short_config("algorithm.inner_lr=1e30")
    with pytest.raises(NonFiniteError, match=r"outer step 0: loss of tasks \[0, 1, .*gradient of"):
        fit(config, tmp_path / "run", progress=False)
    assert last_state(tmp_path / "run")["step"] == 0  # the initial checkpoint is intact


def test_skip_policy_skips_a_bounded_number_of_bad_steps(tmp_path, monkeypatch):
    check = train_module.nonfinite
    bad_steps = {3, 4}

    def flaky(step, *args):
        return "non-finite values (simulated)." if step in bad_steps else check(step, *args)

    monkeypatch.setattr(train_module, "nonfinite", flaky)
    config = short_config("train.nonfinite=skip", "train.max_skips=2", iterations=20)
    with pytest.warns(UserWarning, match="Step skipped"):
        fit(config, tmp_path / "ok", progress=False)
    bad_steps.update({5, 6})
    with pytest.raises(NonFiniteError), pytest.warns(UserWarning):
        fit(config, tmp_path / "too-many", progress=False)


def test_metrics_file_holds_the_logged_lines(tmp_path):
    run = fit(short_config(), tmp_path / "run", progress=False)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in lines] == [
        (50, "train"),
        (100, "train"),
        (100, "val"),
        (150, "train"),
        (200, "train"),
        (200, "val"),
    ]
    assert {"loss", "support_mse", "query_mse", "outer_lr"} <= lines[0].keys()


def test_resume_keeps_the_execution_unless_its_settings_change(tmp_path):
    execution = ["train.strategy=batched", "train.chunk_size=5", "train.checkpoint_inner=true"]
    run = fit(short_config(*execution, iterations=20), tmp_path / "run", progress=False)
    expected = {
        "strategy": "batched",
        "chunk_size": 5,
        "checkpoint_inner": True,
        "precision": "float32",
    }
    assert last_state(run)["execution"] == expected
    fit(short_config(*execution, iterations=40), run, resume=True, progress=False)
    assert last_state(run)["execution"] == expected
    changed = [*execution[:2], "train.checkpoint_inner=false"]
    fit(short_config(*changed, iterations=60), run, resume=True, progress=False)
    assert last_state(run)["execution"] == {**expected, "checkpoint_inner": False}
