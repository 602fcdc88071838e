"""Memory bounds: inner-step checkpointing is exact, budgets are measured and respected."""

import pytest
import torch

from metagrad.algorithms import MAML, MetaParameters
from metagrad.config import load_config, parse_size
from metagrad.errors import ConfigError
from metagrad.execution import Network, plan_memory, strategies_for
from metagrad.execution.memory import memory_in_use, peak_memory
from metagrad.models import Conv4
from metagrad.objectives import CLASSIFICATION
from metagrad.tasks import TaskBatch

CPU = torch.device("cpu")


def conv4_maml(steps=3, optimizer="sgd", first_order=False, size=12, hidden=4):
    torch.manual_seed(0)
    model = Conv4(1, 3, size, hidden=hidden).double()
    lr = 0.3 if optimizer == "sgd" else 0.01
    algorithm = MAML(steps, lr, optimizer, first_order=first_order)
    batch = TaskBatch(
        torch.rand(4, 6, 1, size, size, dtype=torch.float64),
        torch.arange(3).repeat(2).expand(4, 6),
        torch.rand(4, 9, 1, size, size, dtype=torch.float64),
        torch.arange(3).repeat(3).expand(4, 9),
    )
    return algorithm, model, batch


def planned(algorithm, model, batch, budget):
    meta = MetaParameters(dict(model.named_parameters()), {})
    return plan_memory(algorithm, Network(model, CLASSIFICATION), meta, batch, budget)


@pytest.mark.parametrize("strategy", ["loop", "batched"])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_checkpointed_inner_steps_give_the_same_meta_gradient(
    gradient_of, strategy, first_order, optimizer
):
    algorithm, model, batch = conv4_maml(optimizer=optimizer, first_order=first_order)
    reference, reference_metrics = gradient_of(algorithm, model, CLASSIFICATION, batch, "loop")
    grads, metrics = gradient_of(
        algorithm, model, CLASSIFICATION, batch, strategy, checkpoint_inner=True
    )
    for k in reference:
        torch.testing.assert_close(grads[k], reference[k], rtol=1e-10, atol=1e-12)
    for k in metrics:
        torch.testing.assert_close(metrics[k], reference_metrics[k])


def test_checkpointing_is_not_offered_under_vmap():
    _, model, _ = conv4_maml()
    assert set(strategies_for(Network(model, CLASSIFICATION), checkpoint_inner=True)) == {
        "loop",
        "batched",
    }
    with pytest.raises(ConfigError, match="checkpoint_inner"):
        load_config("maml-omniglot-5w1s", ["train.checkpoint_inner=true", "train.strategy=vmap"])


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("8GiB", 8 * 2**30),
        ("8G", 8 * 2**30),
        ("8GB", 8 * 10**9),
        ("512 MiB", 2**29),
        ("1024", 1024),
    ],
)
def test_memory_sizes_parse(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["8 gigs", "lots", "-1G", "1.5.2G"])
def test_bad_memory_sizes_say_how_to_write_one(text):
    with pytest.raises(ConfigError, match="8GiB"):
        parse_size(text)
    with pytest.raises(ConfigError, match=r"train\.max_memory"):
        load_config("maml-sinusoid-5shot", [f"train.max_memory={text}"])


def test_peak_memory_sees_a_temporary_allocation():
    size = 64 * 2**20
    measured = peak_memory(lambda: torch.ones(size // 4).sum(), CPU)
    assert size * 0.9 <= measured <= size * 1.5


def test_plan_within_a_generous_budget_keeps_the_meta_gradient(gradient_of):
    algorithm, model, batch = conv4_maml()
    reference, _ = gradient_of(algorithm, model, CLASSIFICATION, batch, "loop")
    plan, candidates, _ = planned(algorithm, model, batch, in_use_plus(2**30))
    assert plan.strategy in strategies_for(Network(model, CLASSIFICATION)) and candidates
    assert all(c.memory <= 2**30 for c in candidates)
    grads, _ = gradient_of(algorithm, model, CLASSIFICATION, batch, *plan_args(plan))
    for k in reference:
        torch.testing.assert_close(grads[k], reference[k], rtol=1e-9, atol=1e-12)


def plan_args(plan):
    return plan.strategy, plan.chunk_size, plan.checkpoint_inner


def test_a_budget_too_small_for_any_way_is_a_clear_error():
    algorithm, model, batch = conv4_maml(size=32, hidden=16)
    with pytest.raises(ConfigError, match=r"needs at least .* raise train\.max_memory"):
        planned(algorithm, model, batch, in_use_plus(2**10))
    with pytest.raises(ConfigError, match="already in use"):
        planned(algorithm, model, batch, 2**20)


def in_use_plus(extra: int) -> int:
    return memory_in_use(CPU) + extra
