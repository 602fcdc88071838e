"""How a global meta-batch is shared out between processes (no process group needed)."""

import pytest
import torch

from metagrad.errors import ConfigError
from metagrad.execution.distributed import SINGLE, World
from metagrad.tasks import SinusoidTasks


@pytest.mark.parametrize("count,size", [(25, 2), (7, 3), (4, 4), (32, 5)])
def test_shards_are_contiguous_cover_every_task_once_and_differ_by_at_most_one(count, size):
    parts = [World(rank, size).shard(count) for rank in range(size)]
    covered = [i for part in parts for i in range(count)[part]]
    assert covered == list(range(count))
    lengths = [len(range(count)[part]) for part in parts]
    assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


def test_each_rank_takes_its_own_tasks_of_the_global_batch():
    batch = SinusoidTasks(k_shot=5, n_query=5, seed=0).sample("train", 3, 5)
    first, second = World(0, 2).local(batch), World(1, 2).local(batch)
    assert (first.num_tasks, second.num_tasks) == (3, 2)
    torch.testing.assert_close(torch.cat([first.x_support, second.x_support]), batch.x_support)
    assert SINGLE.local(batch) is batch


def test_a_meta_batch_smaller_than_the_world_is_refused_naming_both():
    World(0, 4).check_meta_batch(4)
    with pytest.raises(ConfigError, match="meta_batch_size = 3 is smaller than the 4 processes"):
        World(0, 4).check_meta_batch(3)
