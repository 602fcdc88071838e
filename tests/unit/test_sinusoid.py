import math

import torch

from metagrad.tasks import SinusoidTasks


def test_shapes_and_the_paper_ranges():
    tasks = SinusoidTasks(k_shot=5, n_query=10)
    batch = tasks.sample("train", 0, 1000)
    assert batch.x_support.shape == (1000, 5, 1) and batch.y_query.shape == (1000, 10, 1)
    amplitude, phase = tasks.functions("train", 0, 1000)
    assert amplitude.min() >= 0.1 and amplitude.max() <= 5.0
    assert phase.min() >= 0 and phase.max() <= math.pi
    assert batch.x_support.min() >= -5 and batch.x_query.max() <= 5
    expected = amplitude[:, None, None] * torch.sin(batch.x_query - phase[:, None, None])
    torch.testing.assert_close(batch.y_query, expected)


def test_a_batch_is_a_pure_function_of_seed_split_and_index():
    tasks = SinusoidTasks(k_shot=5, n_query=5, seed=7)
    torch.manual_seed(123)
    first = tasks.sample("train", 42, 4)
    torch.manual_seed(456)  # the global RNG plays no part
    again = tasks.sample("train", 42, 4)
    assert all(torch.equal(a, b) for a, b in zip(first.tensors(), again.tensors()))
    for other in (tasks.sample("train", 43, 4), tasks.sample("test", 42, 4)):
        assert not torch.equal(first.x_support, other.x_support)
    reseeded = SinusoidTasks(k_shot=5, n_query=5, seed=8).sample("train", 42, 4)
    assert not torch.equal(first.x_support, reseeded.x_support)
