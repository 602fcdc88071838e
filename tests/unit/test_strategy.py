"""Every execution strategy and chunking gives the loop's meta-gradient (float64)."""

import time

import pytest
import torch

from metagrad.algorithms import MAML, Pretrain, Reptile, adam, fastest_strategy, sgd
from metagrad.models import Conv4, functional_forward, meta_parameters
from metagrad.objectives import CLASSIFICATION, REGRESSION
from metagrad.tasks import TaskBatch

ALGORITHMS = {
    "maml": lambda f: MAML(f, REGRESSION, 2, sgd(0.05)),
    "fomaml": lambda f: MAML(f, REGRESSION, 2, sgd(0.05), first_order=True),
    "maml-adam": lambda f: MAML(f, REGRESSION, 2, adam(0.01)),
    "reptile": lambda f: Reptile(f, REGRESSION, 3, adam(0.01)),
    "pretrain": lambda f: Pretrain(f, REGRESSION, 1, sgd(0.01)),
}


def run(algorithm, strategy, chunk_size, params, buffers, batch):
    configured = type(algorithm)(
        **{**vars(algorithm), "strategy": strategy, "chunk_size": chunk_size}
    )
    return configured.meta_step(params, buffers, batch)


@pytest.mark.parametrize("name", ALGORITHMS)
@pytest.mark.parametrize(
    ("strategy", "chunk_size"), [("vmap", None), ("vmap", 1), ("vmap", 4), ("loop", 4)]
)
def test_strategies_match_the_per_task_loop(tiny_mlp, sinusoid_batch, name, strategy, chunk_size):
    _, forward, params, buffers = tiny_mlp
    algorithm = ALGORITHMS[name](forward)
    reference, reference_metrics = run(algorithm, "loop", 1, params, buffers, sinusoid_batch)
    grads, metrics = run(algorithm, strategy, chunk_size, params, buffers, sinusoid_batch)
    for k in params:
        torch.testing.assert_close(grads[k], reference[k], rtol=1e-10, atol=1e-12)
    assert metrics.keys() == reference_metrics.keys()
    for k in metrics:
        assert metrics[k].shape == (sinusoid_batch.num_tasks,)
        torch.testing.assert_close(metrics[k], reference_metrics[k])


def test_fastest_strategy_is_measured():
    def run(strategy):
        time.sleep(0.03 if strategy == "vmap" else 0.0)

    chosen, timings = fastest_strategy(run, repeats=1)
    assert chosen == "loop"
    assert timings["vmap"] > timings["loop"]


@pytest.mark.parametrize("first_order", [False, True])
def test_conv4_with_batch_norm_vmap_matches_loop_second_order(first_order):
    """Task batch statistics under vmap: the trap where a fused batch norm goes wrong."""
    torch.manual_seed(0)
    model = Conv4(1, 3, 12, hidden=4).double()
    params, buffers = meta_parameters(model)
    batch = TaskBatch(
        torch.rand(3, 6, 1, 12, 12, dtype=torch.float64),
        torch.arange(3).repeat(2).expand(3, 6),
        torch.rand(3, 9, 1, 12, 12, dtype=torch.float64),
        torch.arange(3).repeat(3).expand(3, 9),
    )
    algorithm = MAML(
        functional_forward(model), CLASSIFICATION, 2, sgd(0.3), first_order=first_order
    )
    reference, _ = run(algorithm, "loop", None, params, buffers, batch)
    for chunk_size in (None, 2):
        grads, _ = run(algorithm, "vmap", chunk_size, params, buffers, batch)
        for k in params:
            torch.testing.assert_close(grads[k], reference[k], rtol=1e-9, atol=1e-12)
