"""The natural-image few-shot datasets by name, as training and ``metagrad data`` ask for them."""

from __future__ import annotations

from pathlib import Path

from metagrad.data.cache import Prepared
from metagrad.data.cifar import prepare_cifar
from metagrad.data.miniimagenet import prepare_miniimagenet
from metagrad.data.tieredimagenet import prepare_tieredimagenet
from metagrad.errors import ConfigError

TITLES = {
    "miniimagenet": "mini-ImageNet",
    "tieredimagenet": "tiered-ImageNet",
    "cifarfs": "CIFAR-FS",
    "fc100": "FC100",
}
DEFAULT_IMAGE_SIZE = {"miniimagenet": 84, "tieredimagenet": 84, "cifarfs": 32, "fc100": 32}
NATURAL_DATASETS = tuple(TITLES)


def prepare(
    dataset: str,
    root: str | Path | None = None,
    *,
    image_size: int | None = None,
    download: bool = False,
) -> Prepared:
    """The splits of ``dataset`` at ``image_size`` (default: its usual size) and its cache file.

    ``download`` fetches CIFAR-100 for CIFAR-FS and FC100. mini- and tiered-ImageNet have no
    checksum-verified download; when they are missing, the error says which files to put where.
    """
    size = DEFAULT_IMAGE_SIZE.get(dataset) if image_size is None else image_size
    if dataset == "miniimagenet":
        return prepare_miniimagenet(root, image_size=size)
    if dataset == "tieredimagenet":
        return prepare_tieredimagenet(root, image_size=size)
    if dataset in ("cifarfs", "fc100"):
        return prepare_cifar(dataset, root, download=download, image_size=size)
    raise ConfigError(
        f"Unknown natural-image dataset {dataset!r}; choose one of {', '.join(NATURAL_DATASETS)}."
    )


def summary(dataset: str, prepared: Prepared) -> str:
    """A few lines: image shape, cache file, and classes and images of each split."""
    channels, height, width = next(iter(prepared.splits.values())).images.shape[2:]
    cache = prepared.cache_file or "none (no writable folder)"
    lines = [f"{TITLES[dataset]}: images {channels}x{height}x{width} uint8, cache {cache}"]
    for split, images in prepared.splits.items():
        lines.append(
            f"{split}: {len(images)} classes x {images.num_examples} images "
            f"({len(images) * images.num_examples} images, {images.images.numel() / 2**20:.1f} MiB)"
        )
    return "\n".join(lines)
