"""The MAML++ evaluation protocol: the K best validation checkpoints kept while training, and
evaluated together, their predicted probabilities averaged."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from metagrad.algorithms import MAML
from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore
from metagrad.cli import main
from metagrad.config import load_config
from metagrad.errors import CheckpointError
from metagrad.evaluate import adapted_metrics, evaluate_run
from metagrad.execution import MetaLearner
from metagrad.models import Conv4
from metagrad.objectives import CLASSIFICATION
from metagrad.tasks import TaskBatch
from metagrad.train import fit


def members(count=3):
    learners = []
    for seed in range(count):
        torch.manual_seed(seed)
        model = Conv4(1, 3, 12, hidden=4).double()
        learners.append(MetaLearner(MAML(inner_lr=0.3), model, CLASSIFICATION, "loop"))
    return learners


def test_an_ensemble_averages_its_members_probabilities_after_every_step():
    generator = torch.Generator().manual_seed(0)
    batch = TaskBatch(
        torch.rand(2, 6, 1, 12, 12, dtype=torch.float64, generator=generator),
        torch.arange(3).repeat(2).expand(2, 6),
        torch.rand(2, 9, 1, 12, 12, dtype=torch.float64, generator=generator),
        torch.arange(3).repeat(3).expand(2, 9),
    )
    learners = members()
    outputs = []  # each member's query logits after 0, 1, 2 steps, by hand
    for learner in learners:
        network, meta = learner.network.task_learner(), learner.meta.detached()
        per_task = []
        for xs, ys, xq in zip(batch.x_support, batch.y_support, batch.x_query):
            path = learner.algorithm.adapt_for_test(
                network,
                meta,
                xs,
                ys,
                steps=2,
                observe=lambda fast, xq=xq, network=network: {"y": network(fast, xq)},
            )
            per_task.append(path.observations["y"])
        outputs.append(torch.stack(per_task))
    probabilities = torch.stack(outputs).softmax(-1).mean(0)  # [tasks, steps + 1, query, ways]
    metrics = adapted_metrics(learners, [batch], steps=2)
    for task in range(2):
        for step in range(3):
            p = probabilities[task, step]
            expected = F.nll_loss(p.log(), batch.y_query[task])
            torch.testing.assert_close(metrics["loss"][task, step], expected)
            accuracy = (p.argmax(-1) == batch.y_query[task]).double().mean()
            torch.testing.assert_close(metrics["accuracy"][task, step], accuracy.float())
    single = adapted_metrics(learners[0], [batch], steps=2)
    assert not torch.allclose(single["loss"], metrics["loss"])


SETTINGS = [
    "model.hidden=[8, 8]",
    "train.meta_batch_size=4",
    "train.strategy=vmap",
    "train.iterations=40",
    "train.val_every=5",
    "train.val_tasks=4",
    "train.log_every=5",
    "train.ckpt_every=10",
    "train.keep_best=3",
    "eval.num_tasks=6",
    "eval.inner_steps=2",
]


def validations(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["post_mse"] for r in map(json.loads, lines) if r["split"] == "val"}


def test_training_keeps_the_k_best_validation_checkpoints_and_resume_keeps_them_right(tmp_path):
    config = load_config("maml-sinusoid-5shot", SETTINGS)
    run = fit(config, tmp_path / "run", progress=False)
    values = validations(run)
    best3 = sorted(values, key=lambda step: (values[step], step))[:3]
    store = CheckpointStore(run / CHECKPOINT_DIR)
    assert sorted(store.steps("top")) == sorted(best3)
    for path in store.paths("top"):  # each holds the state of its own step
        state = torch.load(path, weights_only=False)
        entry = next(e for e in state["top"] if e["step"] == state["step"])
        assert entry["value"] == pytest.approx(values[state["step"]])
    short = load_config("maml-sinusoid-5shot", [*SETTINGS, "train.iterations=20"])
    part = fit(short, tmp_path / "part", progress=False)
    fit(config, part, resume=True, progress=False)
    assert sorted(CheckpointStore(part / CHECKPOINT_DIR).steps("top")) == sorted(best3)


def test_eval_ensemble_from_the_command_line_and_its_errors(tmp_path, capsys):
    config = load_config("maml-sinusoid-5shot", SETTINGS)
    run = fit(config, tmp_path / "run", progress=False)
    assert main(["eval", str(run), "--ensemble", "3"]) == 0
    out = capsys.readouterr().out
    assert "an ensemble of the 3 best validation checkpoints (steps" in out
    saved = json.loads(next(run.glob("eval-test-ensemble3-*.json")).read_text())
    assert len(saved["step"]) == 3 and saved["checkpoint"] == "ensemble3"
    single = evaluate_run(run)
    assert saved["mean"]["mse"] != single["mean"]["mse"]
    with pytest.raises(CheckpointError, match=r"ensemble of 4 .* holds 3 .* train.keep_best >= 4"):
        evaluate_run(run, ensemble=4)
    with pytest.raises(SystemExit) as exit_:
        main(["eval", str(run), "--ensemble", "0"])
    assert exit_.value.code == 2
    assert "not a positive whole number" in capsys.readouterr().err
    assert math.isfinite(saved["mean"]["mse"][-1])


def test_a_damaged_ensemble_member_is_left_out_with_a_warning(tmp_path):
    config = load_config("maml-sinusoid-5shot", SETTINGS)
    run = fit(config, tmp_path / "run", progress=False)
    damaged = CheckpointStore(run / CHECKPOINT_DIR).paths("top")[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    with (
        pytest.raises(CheckpointError, match=r"ensemble of 3 .* holds 2 intact"),
        pytest.warns(UserWarning, match="left out of the ensemble"),
    ):
        evaluate_run(run, ensemble=3)
    with pytest.warns(UserWarning, match=damaged.name):
        result = evaluate_run(run, ensemble=2)
    assert len(result["step"]) == 2
    assert len(damaged.read_bytes()) == 100  # kept as it was, for the user to inspect
