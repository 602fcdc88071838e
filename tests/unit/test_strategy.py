"""Every execution strategy and chunking gives the loop's meta-gradient (float64)."""

import time

import pytest
import torch
import torch.nn.functional as F

from metagrad.algorithms import MAML, MetaParameters, Pretrain, Reptile
from metagrad.errors import ConfigError
from metagrad.execution import ExecutionPlan, Network, choose_plan, meta_gradient
from metagrad.models import Conv4, TaskBatchNorm, with_batch_norm
from metagrad.objectives import CLASSIFICATION, REGRESSION, Objective
from metagrad.tasks import TaskBatch

ALGORITHMS = {
    "maml": MAML(inner_steps=2, inner_lr=0.05),
    "fomaml": MAML(inner_steps=2, inner_lr=0.05, first_order=True),
    "maml-adam": MAML(inner_steps=2, inner_lr=0.01, inner_optimizer="adam"),
    "reptile": Reptile(inner_steps=3, inner_lr=0.01, inner_optimizer="adam"),
    "pretrain": Pretrain(inner_steps=1, inner_lr=0.01),
    "maml-0-steps": MAML(inner_steps=0, inner_lr=0.05),
}


@pytest.mark.parametrize("name", ALGORITHMS)
@pytest.mark.parametrize(
    ("strategy", "chunk_size"),
    [
        ("vmap", None),
        ("vmap", 1),
        ("vmap", 4),
        ("loop", 4),
        ("hybrid", None),
        ("hybrid", 3),
        ("batched", None),
        ("batched", 4),
    ],
)
def test_strategies_match_the_per_task_loop(
    tiny_mlp, sinusoid_batch, gradient_of, name, strategy, chunk_size
):
    model = tiny_mlp[0]
    algorithm = ALGORITHMS[name]
    reference, reference_metrics = gradient_of(algorithm, model, REGRESSION, sinusoid_batch, "loop")
    grads, metrics = gradient_of(algorithm, model, REGRESSION, sinusoid_batch, strategy, chunk_size)
    for k in reference:
        torch.testing.assert_close(grads[k], reference[k], rtol=1e-10, atol=1e-12)
    assert metrics.keys() == reference_metrics.keys()
    for k in metrics:
        assert metrics[k].shape == (sinusoid_batch.num_tasks,)
        torch.testing.assert_close(metrics[k], reference_metrics[k])


def test_the_probe_keeps_the_fastest_strategy_and_drops_the_slow_ones(tiny_mlp, sinusoid_batch):
    """A strategy made far slower than the others is dropped after its first call."""
    model = tiny_mlp[0]
    network = Network(model, REGRESSION)
    meta = MetaParameters(dict(model.named_parameters()), {})
    calls = []

    class Slowed(MAML):
        def inner(self, learner, meta, x_support, y_support):
            calls.append(type(learner).__name__)
            if type(learner).__name__ == "StackLearner":
                time.sleep(0.1)  # only the batched run is slow
            return super().inner(learner, meta, x_support, y_support)

    lines = []
    plan = choose_plan(
        Slowed(inner_lr=0.1), network, meta, sinusoid_batch, ExecutionPlan(), report=lines.append
    )
    assert plan.strategy != "batched"
    assert calls.count("StackLearner") == 1  # timed once (the warm-up), then dropped
    assert lines[0].startswith("choosing how to execute a meta-step")
    assert lines[-1].startswith(f"execution plan: {plan.strategy}")


def test_an_auto_plan_is_chosen_before_a_meta_gradient(tiny_mlp, sinusoid_batch):
    model = tiny_mlp[0]
    meta = MetaParameters(dict(model.named_parameters()), {})
    with pytest.raises(ConfigError, match="call choose_plan"):
        meta_gradient(MAML(), Network(model, REGRESSION), meta, sinusoid_batch, ExecutionPlan())


@pytest.mark.parametrize("pool", ["stride", "max"])
@pytest.mark.parametrize("first_order", [False, True])
def test_conv4_with_batch_norm_every_strategy_matches_loop(gradient_of, first_order, pool):
    """Task batch statistics under vmap: the trap where a fused batch norm goes wrong."""
    torch.manual_seed(0)
    size = 12 if pool == "stride" else 16  # four 2×2 max-pools need 16 pixels
    model = Conv4(1, 3, size, hidden=4, pool=pool).double()
    batch = TaskBatch(
        torch.rand(3, 6, 1, size, size, dtype=torch.float64),
        torch.arange(3).repeat(2).expand(3, 6),
        torch.rand(3, 9, 1, size, size, dtype=torch.float64),
        torch.arange(3).repeat(3).expand(3, 9),
    )
    algorithm = MAML(inner_steps=2, inner_lr=0.3, first_order=first_order)
    reference, _ = gradient_of(algorithm, model, CLASSIFICATION, batch, "loop")
    strategies = [(s, c) for s in ("vmap", "hybrid", "batched") for c in (None, 2)]
    for strategy, chunk_size in strategies:
        grads, _ = gradient_of(algorithm, model, CLASSIFICATION, batch, strategy, chunk_size)
        for k in reference:
            torch.testing.assert_close(grads[k], reference[k], rtol=1e-9, atol=1e-12)


def test_the_fused_kernel_runs_only_in_a_copy_that_shares_the_parameters():
    """The loop strategies call a copy whose batch norms run the fused kernel; the module the
    user gave, which vmap calls, keeps primitive ops; both compute the same."""
    torch.manual_seed(0)
    model = Conv4(1, 3, 12, hidden=4).double()
    fused = with_batch_norm(model, fused=True)
    norms = [m for m in model.modules() if isinstance(m, TaskBatchNorm)]
    fused_norms = [m for m in fused.modules() if isinstance(m, TaskBatchNorm)]
    assert len(norms) == len(fused_norms) == 4
    assert not any(m.fused for m in norms) and all(m.fused for m in fused_norms)
    for (name, p), (fused_name, q) in zip(
        model.named_parameters(), fused.named_parameters(), strict=True
    ):
        assert name == fused_name and p is q
    x = torch.rand(5, 1, 12, 12, dtype=torch.float64)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-12, atol=1e-12)
    plain = torch.nn.Sequential(torch.nn.Linear(2, 2))
    assert with_batch_norm(plain, fused=True) is plain


def test_a_strategy_that_cannot_run_is_refused_with_the_ones_that_can(
    tiny_mlp, sinusoid_batch, gradient_of
):
    plain = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    with pytest.raises(ConfigError, match="Choose one of vmap, loop, hybrid, or auto"):
        gradient_of(MAML(), plain.double(), REGRESSION, sinusoid_batch, "batched")
    with pytest.raises(ConfigError, match="checkpoint_inner cannot run under vmap"):
        ExecutionPlan("hybrid", checkpoint_inner=True)
    with pytest.raises(ConfigError, match="not an execution strategy"):
        ExecutionPlan("vmapp")


def probe_with_fake_steps(step_seconds, tiny_mlp, sinusoid_batch, monkeypatch, **options):
    """`choose_plan` with each strategy's meta-step replaced by a sleep of
    `step_seconds[strategy]`:
    the plan, the strategies called in order, and the reported lines."""
    from metagrad.execution import plan as plan_module

    calls, lines = [], []

    def fake(algorithm, network, meta, batch, plan):
        calls.append(plan.strategy)
        time.sleep(step_seconds[plan.strategy])

    monkeypatch.setattr(plan_module, "meta_gradient", fake)
    model = tiny_mlp[0]
    meta = MetaParameters(dict(model.named_parameters()), {})
    network = Network(model, REGRESSION)
    chosen = choose_plan(
        MAML(), network, meta, sinusoid_batch, ExecutionPlan(), report=lines.append, **options
    )
    return chosen, calls, lines


def test_the_probe_halves_the_candidates_each_round(tiny_mlp, sinusoid_batch, monkeypatch):
    """Four strategies within 2× of each other, each call long enough to be timed alone: 4
    first calls, then 4 and 2 timed ones."""
    seconds = {"loop": 0.06, "batched": 0.075, "hybrid": 0.09, "vmap": 0.105}
    chosen, calls, _ = probe_with_fake_steps(seconds, tiny_mlp, sinusoid_batch, monkeypatch)
    assert chosen.strategy == "loop"
    assert len(calls) == 10
    assert calls[-2:] == ["loop", "batched"]


def test_the_probe_stops_timing_when_its_time_is_up(tiny_mlp, sinusoid_batch, monkeypatch):
    """With 0.1 s to spend and 0.06 s per call, the probe times loop and batched once each and
    keeps the faster; hybrid and vmap are never run."""
    seconds = {"loop": 0.06, "batched": 0.075, "hybrid": 0.01, "vmap": 0.01}
    chosen, calls, lines = probe_with_fake_steps(
        seconds, tiny_mlp, sinusoid_batch, monkeypatch, seconds=0.1
    )
    assert calls == ["loop", "batched"] and chosen.strategy == "loop"
    assert not any(line.strip().startswith("round") for line in lines)


def test_an_objective_of_one_task_only_runs_stacked_too(tiny_mlp, sinusoid_batch, gradient_of):
    """An objective that takes one task only (not `stacks`): the stacked learner vectorises
    its loss and metrics."""
    plain = Objective(
        loss=F.mse_loss,
        metrics=lambda outputs, y: {"mse": F.mse_loss(outputs, y)},
        primary="mse",
        higher_is_better=False,
    )
    model = tiny_mlp[0]
    reference, reference_metrics = gradient_of(MAML(2, 0.05), model, plain, sinusoid_batch, "loop")
    grads, metrics = gradient_of(MAML(2, 0.05), model, plain, sinusoid_batch, "batched")
    for k in reference:
        torch.testing.assert_close(grads[k], reference[k], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(metrics["query_mse"], reference_metrics["query_mse"])
