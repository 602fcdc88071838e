"""Every execution strategy and chunking gives the loop's meta-gradient (float64)."""

import dataclasses
import time

import pytest
import torch

from metagrad.algorithms import MAML, Pretrain, Reptile, adam, fastest_strategy, sgd
from metagrad.errors import ConfigError
from metagrad.models import Conv4, functional_forward, meta_parameters, tasks_forward
from metagrad.objectives import CLASSIFICATION, REGRESSION
from metagrad.tasks import TaskBatch

ALGORITHMS = {
    "maml": lambda m: MAML(*networks(m), 2, sgd(0.05)),
    "fomaml": lambda m: MAML(*networks(m), 2, sgd(0.05), first_order=True),
    "maml-adam": lambda m: MAML(*networks(m), 2, adam(0.01)),
    "reptile": lambda m: Reptile(*networks(m), 3, adam(0.01)),
    "pretrain": lambda m: Pretrain(*networks(m), 1, sgd(0.01)),
    "maml-0-steps": lambda m: MAML(*networks(m), 0, sgd(0.05)),
}


def networks(model, objective=REGRESSION):
    """Positional `forward, objective`; the task-batched forward goes in by keyword below."""
    return functional_forward(model), objective


def run(algorithm, strategy, chunk_size, params, buffers, batch, model):
    configured = dataclasses.replace(
        algorithm, strategy=strategy, chunk_size=chunk_size, forward_tasks=tasks_forward(model)
    )
    return configured.meta_step(params, buffers, batch)


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
def test_strategies_match_the_per_task_loop(tiny_mlp, sinusoid_batch, name, strategy, chunk_size):
    model, _, params, buffers = tiny_mlp
    algorithm = ALGORITHMS[name](model)
    reference, reference_metrics = run(algorithm, "loop", 1, params, buffers, sinusoid_batch, model)
    grads, metrics = run(algorithm, strategy, chunk_size, params, buffers, sinusoid_batch, model)
    for k in params:
        torch.testing.assert_close(grads[k], reference[k], rtol=1e-10, atol=1e-12)
    assert metrics.keys() == reference_metrics.keys()
    for k in metrics:
        assert metrics[k].shape == (sinusoid_batch.num_tasks,)
        torch.testing.assert_close(metrics[k], reference_metrics[k])


def test_fastest_strategy_is_measured():
    def run(strategy):
        time.sleep(0.03 if strategy == "vmap" else 0.0)

    chosen, timings = fastest_strategy(run, ("vmap", "loop"), repeats=1)
    assert chosen == "loop"
    assert timings["vmap"] > timings["loop"]


@pytest.mark.parametrize("pool", ["stride", "max"])
@pytest.mark.parametrize("first_order", [False, True])
def test_conv4_with_batch_norm_every_strategy_matches_loop(first_order, pool):
    """Task batch statistics under vmap: the trap where a fused batch norm goes wrong."""
    torch.manual_seed(0)
    size = 12 if pool == "stride" else 16  # four 2×2 max-pools need 16 pixels
    model = Conv4(1, 3, size, hidden=4, pool=pool).double()
    params, buffers = meta_parameters(model)
    batch = TaskBatch(
        torch.rand(3, 6, 1, size, size, dtype=torch.float64),
        torch.arange(3).repeat(2).expand(3, 6),
        torch.rand(3, 9, 1, size, size, dtype=torch.float64),
        torch.arange(3).repeat(3).expand(3, 9),
    )
    algorithm = MAML(*networks(model, CLASSIFICATION), 2, sgd(0.3), first_order=first_order)
    reference, _ = run(algorithm, "loop", None, params, buffers, batch, model)
    strategies = [(s, c) for s in ("vmap", "hybrid", "batched") for c in (None, 2)]
    for strategy, chunk_size in strategies:
        grads, _ = run(algorithm, strategy, chunk_size, params, buffers, batch, model)
        for k in params:
            torch.testing.assert_close(grads[k], reference[k], rtol=1e-9, atol=1e-12)


def test_a_strategy_that_cannot_run_is_refused_with_the_ones_that_can(tiny_mlp):
    _, forward, *_ = tiny_mlp
    without_batched_forward = MAML(forward, REGRESSION, 1, sgd(0.1))
    with pytest.raises(ConfigError, match="Choose one of vmap, loop, hybrid, or auto"):
        dataclasses.replace(without_batched_forward, strategy="batched")
    with pytest.raises(ConfigError, match="checkpoint_inner cannot run under vmap"):
        MAML(forward, REGRESSION, 1, sgd(0.1), strategy="hybrid", checkpoint_inner=True)
