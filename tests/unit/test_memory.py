"""Memory bounds: inner-step checkpointing is exact, budgets are measured and respected."""

import dataclasses

import pytest
import torch

from metagrad.algorithms import MAML, adam, sgd
from metagrad.config import load_config, parse_size
from metagrad.errors import ConfigError
from metagrad.memory import memory_in_use, peak_memory, plan_memory
from metagrad.models import Conv4, functional_forward, meta_parameters, tasks_forward
from metagrad.objectives import CLASSIFICATION
from metagrad.tasks import TaskBatch

CPU = torch.device("cpu")


def conv4_maml(steps=3, optimizer=None, first_order=False, size=12, hidden=4):
    torch.manual_seed(0)
    model = Conv4(1, 3, size, hidden=hidden).double()
    params, buffers = meta_parameters(model)
    algorithm = MAML(
        functional_forward(model),
        CLASSIFICATION,
        steps,
        optimizer or sgd(0.3),
        forward_tasks=tasks_forward(model),
        first_order=first_order,
    )
    batch = TaskBatch(
        torch.rand(4, 6, 1, size, size, dtype=torch.float64),
        torch.arange(3).repeat(2).expand(4, 6),
        torch.rand(4, 9, 1, size, size, dtype=torch.float64),
        torch.arange(3).repeat(3).expand(4, 9),
    )
    return algorithm, params, buffers, batch


@pytest.mark.parametrize("strategy", ["loop", "batched"])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("optimizer", [sgd(0.3), adam(0.01)], ids=["sgd", "adam"])
def test_checkpointed_inner_steps_give_the_same_meta_gradient(strategy, first_order, optimizer):
    algorithm, params, buffers, batch = conv4_maml(optimizer=optimizer, first_order=first_order)
    reference, reference_metrics = dataclasses.replace(algorithm, strategy="loop").meta_step(
        params, buffers, batch
    )
    checkpointed = dataclasses.replace(algorithm, strategy=strategy, checkpoint_inner=True)
    grads, metrics = checkpointed.meta_step(params, buffers, batch)
    for k in params:
        torch.testing.assert_close(grads[k], reference[k], rtol=1e-10, atol=1e-12)
    for k in metrics:
        torch.testing.assert_close(metrics[k], reference_metrics[k])


def test_checkpointing_is_not_offered_under_vmap():
    algorithm, *_ = conv4_maml()
    checkpointed = dataclasses.replace(algorithm, strategy="loop", checkpoint_inner=True)
    assert set(checkpointed.strategies) == {
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


def test_plan_within_a_generous_budget_keeps_the_meta_gradient():
    algorithm, params, buffers, batch = conv4_maml()
    reference, _ = dataclasses.replace(algorithm, strategy="loop").meta_step(params, buffers, batch)
    planned, candidates, _ = plan_memory(algorithm, params, buffers, batch, in_use_plus(2**30), CPU)
    assert planned.strategy in algorithm.strategies and candidates
    assert all(c.memory <= 2**30 for c in candidates)
    grads, _ = planned.meta_step(params, buffers, batch)
    for k in params:
        torch.testing.assert_close(grads[k], reference[k], rtol=1e-9, atol=1e-12)


def test_a_budget_too_small_for_any_way_is_a_clear_error():
    algorithm, params, buffers, batch = conv4_maml(size=32, hidden=16)
    with pytest.raises(ConfigError, match=r"needs at least .* raise train\.max_memory"):
        plan_memory(algorithm, params, buffers, batch, in_use_plus(2**10), CPU)
    with pytest.raises(ConfigError, match="already in use"):
        plan_memory(algorithm, params, buffers, batch, 2**20, CPU)


def in_use_plus(extra: int) -> int:
    return memory_in_use(CPU) + extra
