"""On a GPU (skipped without one): every strategy's meta-gradient equals the CPU loop's, and a
run trains end to end on `train.device: cuda` (`benchmarks/gpu-check.sh` runs these)."""

import pytest
import torch

from metagrad.algorithms import MAML, MetaParameters
from metagrad.config import load_config
from metagrad.evaluate import evaluate_run
from metagrad.execution import ExecutionPlan, Network, meta_gradient, strategies_for
from metagrad.models import Conv4
from metagrad.objectives import CLASSIFICATION
from metagrad.tasks import TaskBatch
from metagrad.train import fit

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


def batch_and_model(device):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 10, 1, 28, 28, generator=generator, dtype=torch.float64)
    y = torch.arange(5).repeat(2).expand(4, -1)
    batch = TaskBatch(x[:, :5], y[:, :5], x[:, 5:], y[:, 5:]).to(device)
    torch.manual_seed(0)
    return batch, Conv4(1, 5, 28, hidden=8).double().to(device)


def grads_of(model, batch, strategy):
    network = Network(model, CLASSIFICATION)
    algorithm = MAML(inner_steps=2, inner_lr=0.05).for_network(network.normalisation)
    meta = MetaParameters(dict(model.named_parameters()), {})
    grads, _ = meta_gradient(algorithm, network, meta, batch, ExecutionPlan(strategy))
    return {k: v.cpu() for k, v in grads.named().items()}


@pytest.mark.parametrize("strategy", ["vmap", "loop", "hybrid", "batched"])
def test_every_strategy_on_the_gpu_gives_the_cpu_loops_meta_gradient(strategy):
    cpu_batch, cpu_model = batch_and_model("cpu")
    reference = grads_of(cpu_model, cpu_batch, "loop")
    batch, model = batch_and_model("cuda")
    if strategy not in strategies_for(Network(model, CLASSIFICATION)):
        pytest.skip(f"{strategy} cannot run this network")
    for name, value in grads_of(model, batch, strategy).items():
        torch.testing.assert_close(value, reference[name], rtol=1e-9, atol=1e-11)


def test_a_run_trains_and_evaluates_on_the_gpu(tmp_path):
    config = load_config(
        "maml-sinusoid-5shot",
        [
            "train.device=cuda",
            "train.iterations=200",
            "train.val_every=100",
            "train.val_tasks=20",
            "eval.num_tasks=50",
        ],
    )
    result = evaluate_run(fit(config, tmp_path / "run", progress=False))
    assert result["mean"]["mse"][-1] < result["mean"]["mse"][0]
