"""Datasets as class-indexed image tensors, and the fixed class splits to meta-train on."""

from metagrad.data.class_images import ClassImages
from metagrad.data.omniglot import load_omniglot, omniglot_splits

__all__ = ["ClassImages", "load_omniglot", "omniglot_splits"]
