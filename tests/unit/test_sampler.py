"""EpisodeSampler invariants, on images that encode their own class and example number."""

import pytest
import torch

from metagrad.data import ClassImages
from metagrad.errors import ConfigError
from metagrad.tasks.sampler import EpisodeSampler

CLASSES, EXAMPLES = 12, 6


def labelled_images(first_class: int) -> ClassImages:
    """Pixel (0, 0) holds the global class number, pixel (0, 1) the example number."""
    images = torch.zeros(CLASSES, EXAMPLES, 1, 4, 4, dtype=torch.uint8)
    images[:, :, 0, 0, 0] = torch.arange(first_class, first_class + CLASSES)[:, None]
    images[:, :, 0, 0, 1] = torch.arange(EXAMPLES)
    return ClassImages(images, tuple(f"c{first_class + i}" for i in range(CLASSES)))


@pytest.fixture
def sampler():
    images = {
        "train": labelled_images(0),
        "val": labelled_images(100),
        "test": labelled_images(200),
    }
    return EpisodeSampler(images, n_way=4, k_shot=2, n_query=3, seed=5)


def identities(x: torch.Tensor) -> torch.Tensor:
    """`[T, S, 1, 4, 4]` float images → `[T, S, 2]` (class, example) integer pairs."""
    return (x[:, :, 0, 0, :2] * 255).round().long()


def test_shapes_labels_and_counts(sampler):
    batch = sampler.sample("train", 0, 8)
    assert batch.x_support.shape == (8, 8, 1, 4, 4) and batch.x_query.shape == (8, 12, 1, 4, 4)
    assert batch.x_support.dtype == torch.float32 and batch.x_support.max() <= 1
    for labels, per_class in ((batch.y_support, 2), (batch.y_query, 3)):
        assert labels.dtype == torch.int64
        for task in labels:
            assert torch.bincount(task, minlength=4).tolist() == [per_class] * 4


def test_a_label_means_one_class_and_support_and_query_are_disjoint(sampler):
    batch = sampler.sample("train", 3, 8)
    support, query = identities(batch.x_support), identities(batch.x_query)
    for t in range(8):
        classes = {}
        for ident, label in [
            *zip(support[t], batch.y_support[t]),
            *zip(query[t], batch.y_query[t]),
        ]:
            classes.setdefault(int(label), set()).add(int(ident[0]))
        assert all(len(c) == 1 for c in classes.values())
        assert len(set.union(*classes.values())) == 4
        support_ids = {tuple(i.tolist()) for i in support[t]}
        query_ids = {tuple(i.tolist()) for i in query[t]}
        assert not support_ids & query_ids
        assert len(support_ids) == 8 and len(query_ids) == 12


def test_splits_draw_only_their_own_classes(sampler):
    for split, low in (("train", 0), ("val", 100), ("test", 200)):
        classes = identities(sampler.sample(split, 0, 16).x_query)[..., 0]
        assert classes.min() >= low and classes.max() < low + CLASSES


def test_same_index_same_task_different_index_different_task(sampler):
    first, again = sampler.sample("train", 7, 4), sampler.sample("train", 7, 4)
    assert all(torch.equal(a, b) for a, b in zip(first.tensors(), again.tensors()))
    assert not torch.equal(first.x_support, sampler.sample("train", 8, 4).x_support)


def test_labels_are_shuffled_within_tasks(sampler):
    batch = sampler.sample("train", 0, 32)
    first_labels = batch.y_support[:, 0]
    assert len(set(first_labels.tolist())) > 1


def test_too_many_ways_or_shots_fail_before_any_compute():
    images = {"train": labelled_images(0)}
    with pytest.raises(ConfigError, match="n_way = 20 but the train split has only 12 classes"):
        EpisodeSampler(images, n_way=20, k_shot=1, n_query=1)
    with pytest.raises(ConfigError, match=r"k_shot \+ n_query = 4 \+ 3 = 7 .* 6 examples"):
        EpisodeSampler(images, n_way=5, k_shot=4, n_query=3)
