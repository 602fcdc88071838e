"""Datasets as class-indexed image tensors, and the fixed class splits to meta-train on."""

from metagrad.data.cifar import cifar_splits, load_cifar_fs, load_fc100
from metagrad.data.class_images import ClassImages
from metagrad.data.folder import (
    class_images_from_tensors,
    load_image_folder,
    seeded_split,
    splits_from_tensors,
)
from metagrad.data.miniimagenet import load_miniimagenet
from metagrad.data.omniglot import load_omniglot, omniglot_splits
from metagrad.data.tieredimagenet import load_tieredimagenet

__all__ = [
    "ClassImages",
    "cifar_splits",
    "class_images_from_tensors",
    "load_cifar_fs",
    "load_fc100",
    "load_image_folder",
    "load_miniimagenet",
    "load_omniglot",
    "load_tieredimagenet",
    "omniglot_splits",
    "seeded_split",
    "splits_from_tensors",
]
