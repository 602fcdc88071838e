"""Meta-training end to end, in process: it learns, it is deterministic, it resumes exactly."""

import json

import pytest
import torch

from metagrad import train as train_module
from metagrad.checkpoint import load_checkpoint
from metagrad.config import load_config
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


def test_short_maml_training_halves_the_post_adaptation_mse(tmp_path):
    before = evaluate_run(
        fit(short_config("train.val_every=1", iterations=1), tmp_path / "a", progress=False)
    )
    after = evaluate_run(fit(short_config(iterations=2000), tmp_path / "b", progress=False))
    mse_before, mse_after = before["mean"]["mse"][1], after["mean"]["mse"][1]
    assert mse_after <= 0.5 * mse_before, (mse_before, mse_after)


def test_same_seed_same_numbers_different_seed_different_numbers(tmp_path):
    runs = [
        fit(short_config(f"train.seed={seed}"), tmp_path / f"{i}", progress=False)
        for i, seed in enumerate([0, 0, 1])
    ]
    metrics = [(run / "metrics.jsonl").read_text() for run in runs]
    assert metrics[0] == metrics[1]
    assert metrics[0] != metrics[2]


def test_resume_gives_the_uninterrupted_run_bit_for_bit(tmp_path, monkeypatch):
    config = short_config("train.ckpt_every=50", "train.val_every=50", iterations=150)
    whole = fit(config, tmp_path / "whole", progress=False)

    check = train_module.check_finite

    def interrupt_at_step_120(step, *args):
        if step == 120:
            raise KeyboardInterrupt
        check(step, *args)

    monkeypatch.setattr(train_module, "check_finite", interrupt_at_step_120)
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "split", progress=False)
    monkeypatch.setattr(train_module, "check_finite", check)
    assert load_checkpoint(tmp_path / "split/checkpoints/last.pt")["step"] == 100
    fit(config, tmp_path / "split", resume=True, progress=False)

    a = load_checkpoint(whole / "checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "split/checkpoints/last.pt")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert a["best"] == b["best"]
    lines = [(p / "metrics.jsonl").read_text().splitlines() for p in (whole, tmp_path / "split")]
    assert [json.loads(x) for x in lines[0]] == [json.loads(x) for x in lines[1]]
