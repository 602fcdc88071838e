"""bf16 autocast of meta-training's forward passes (`train.precision`): applied, bounded, and
float32 where it must stay so."""

import pytest
import torch

from metagrad.algorithms import MAML, MetaParameters
from metagrad.build import build_learner
from metagrad.config import load_config
from metagrad.errors import ConfigError
from metagrad.execution import ExecutionPlan, Network, meta_gradient
from metagrad.models import Conv4
from metagrad.models.exact import exact_modules
from metagrad.objectives import CLASSIFICATION
from metagrad.tasks import TaskBatch


def flat_meta_gradient(strategy: str, precision: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 10, 1, 28, 28, generator=generator)
    y = torch.arange(5).repeat(2).expand(4, -1)
    batch = TaskBatch(x[:, :5], y[:, :5], x[:, 5:], y[:, 5:])
    torch.manual_seed(0)
    network = Network(exact_modules(Conv4(1, 5, 28, hidden=16)), CLASSIFICATION)
    algorithm = MAML(inner_steps=2, inner_lr=0.4).for_network(network.normalisation)
    meta = MetaParameters(dict(network.module.named_parameters()), {})
    plan = ExecutionPlan(strategy, precision=precision)
    grads, _ = meta_gradient(algorithm, network, meta, batch, plan)
    assert all(g.dtype == torch.float32 for g in grads.named().values())
    return torch.cat([g.flatten() for g in grads.named().values()])


@pytest.mark.parametrize("strategy", ["loop", "vmap", "batched"])
def test_bf16_changes_the_meta_gradient_by_a_bounded_amount(strategy):
    exact, bf16 = flat_meta_gradient(strategy, "float32"), flat_meta_gradient(strategy, "bf16")
    relative = ((bf16 - exact).norm() / exact.norm()).item()
    assert 1e-4 < relative < 0.5  # really bf16 (float32 rounding is ~1e-7), still a gradient
    assert torch.nn.functional.cosine_similarity(bf16, exact, dim=0) > 0.85


def test_the_config_sets_the_precision_and_refuses_another():
    learner = build_learner(load_config("maml-sinusoid-5shot", ["train.precision=bf16"]))
    assert learner.plan.precision == "bf16"
    assert "bf16 autocast" in learner.plan.describe()
    with pytest.raises(ConfigError, match=r"train\.precision"):
        load_config("maml-sinusoid-5shot", ["train.precision=fp16"])
    with pytest.raises(ConfigError, match="'fp16' is not a precision; choose one of float32, bf16"):
        ExecutionPlan("loop", precision="fp16")
