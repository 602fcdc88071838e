"""Every execution strategy and chunking gives the loop's meta-gradient (float64)."""

import pytest
import torch
from torch import nn

from metagrad.algorithms import MAML, Pretrain, Reptile, adam, choose_strategy, sgd
from metagrad.objectives import REGRESSION

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


def test_auto_strategy_is_vmap_for_mlps_and_loop_for_convolutions_on_cpu():
    cpu = torch.device("cpu")
    assert choose_strategy("auto", nn.Linear(2, 2), cpu) == "vmap"
    assert choose_strategy("auto", nn.Conv2d(1, 1, 3), cpu) == "loop"
    assert choose_strategy("auto", nn.Conv2d(1, 1, 3), torch.device("cuda")) == "vmap"
    assert choose_strategy("loop", nn.Linear(2, 2), cpu) == "loop"
