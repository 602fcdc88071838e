"""Natural images as uint8 ``[3, S, S]`` arrays: decoded, converted to RGB, resized once."""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from metagrad.data.class_images import ClassImages
from metagrad.errors import ConfigError, DatasetError

Item = TypeVar("Item")


def check_image_size(image_size: object, hint: str) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(
            f"image_size must be a positive integer number of pixels, got {image_size!r}; "
            f"use e.g. {hint}."
        )


def _to_array(image: Image.Image, size: int) -> np.ndarray:
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def decode_rgb(data: bytes, where: str, size: int, fix: str) -> np.ndarray:
    """An encoded image (JPEG, PNG, ...) as RGB ``[3, size, size]``, resized with LANCZOS.

    Non-square images are resized to a square without cropping, as the mini-ImageNet and
    tiered-ImageNet preprocessing scripts do.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError, zlib.error, Image.DecompressionBombError) as exc:
        raise DatasetError(
            f"Cannot decode the image {where}: {exc}. The file is corrupt or truncated: {fix}."
        ) from exc
    return _to_array(rgb, size)


def resize_rgb(pixels: np.ndarray, size: int) -> np.ndarray:
    """A decoded ``[H, W, 3]`` uint8 image as ``[3, size, size]``, resized with LANCZOS."""
    if pixels.shape[:2] == (size, size):
        return pixels.transpose(2, 0, 1)
    return _to_array(Image.fromarray(pixels), size)


def stack_classes(
    groups: Mapping[str, Sequence[Item]], decode: Callable[[Item], np.ndarray], size: int
) -> ClassImages:
    """Decode every item of every class into one ``[C, M, 3, size, size]`` block.

    ``groups`` maps class names, in order, to their items; every class must hold M items.
    """
    examples = len(next(iter(groups.values()), ()))
    uneven = [name for name, items in groups.items() if len(items) != examples]
    if uneven:
        raise DatasetError(
            f"class {uneven[0]!r} has {len(groups[uneven[0]])} images but the first class has "
            f"{examples}; every class must hold the same number (check the dataset files)"
        )
    images = np.empty((len(groups), examples, 3, size, size), dtype=np.uint8)
    for c, items in enumerate(groups.values()):
        for e, item in enumerate(items):
            images[c, e] = decode(item)
    return ClassImages(torch.from_numpy(images), tuple(groups))
