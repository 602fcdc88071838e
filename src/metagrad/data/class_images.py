"""A class-indexed block of images: the in-memory form of a few-shot classification dataset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from metagrad.errors import DatasetError


@dataclass(frozen=True)
class ClassImages:
    """Images grouped by class, every class with the same number of examples.

    ``images`` is a uint8 tensor ``[C, M, channels, H, W]``: ``C`` classes with ``M`` examples
    each. ``class_names[c]`` names class ``c`` (for Omniglot ``"Alphabet/characterNN"``, with a
    ``"/rotNNN"`` suffix for rotated copies).
    """

    images: torch.Tensor
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor):
            raise DatasetError(
                f"ClassImages.images must be a torch.Tensor, got {type(self.images).__name__}; "
                "convert the array with torch.from_numpy first."
            )
        if self.images.dtype != torch.uint8:
            raise DatasetError(
                f"ClassImages.images must have dtype torch.uint8, got {self.images.dtype}; "
                "store pixels as uint8 in [0, 255] and convert to float when sampling tasks."
            )
        if self.images.dim() != 5:
            raise DatasetError(
                f"ClassImages.images must have 5 dimensions [classes, examples, channels, height, "
                f"width], got shape {tuple(self.images.shape)}; add the missing axes (e.g. "
                "unsqueeze(2) for a single channel)."
            )
        names = tuple(self.class_names)
        object.__setattr__(self, "class_names", names)
        if len(names) != self.images.shape[0]:
            raise DatasetError(
                f"ClassImages has {self.images.shape[0]} classes of images but {len(names)} "
                "class names; give exactly one name per class."
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_examples(self) -> int:
        """Examples per class (``M``)."""
        return self.images.shape[1]

    def subset(self, class_indices: Sequence[int]) -> ClassImages:
        """The classes at ``class_indices``, in that order."""
        indices = [int(i) for i in class_indices]
        bad = [i for i in indices if not 0 <= i < len(self)]
        if bad:
            raise IndexError(
                f"class indices {bad[:5]} are out of range for {len(self)} classes; "
                f"use indices in [0, {len(self) - 1}]."
            )
        index = torch.tensor(indices, dtype=torch.long, device=self.images.device)
        return ClassImages(
            self.images.index_select(0, index), tuple(self.class_names[i] for i in indices)
        )

    def with_rotations(self, angles: Sequence[int] = (0, 90, 180, 270)) -> ClassImages:
        """Every class rotated by each angle, each rotation a class of its own.

        Rotations are counter-clockwise (as ``torch.rot90``, PIL's ``Image.rotate`` and
        ``tf.image.rot90``). The rotated copies of a class follow each other: ``c0/rot000,
        c0/rot090, ..., c1/rot000, ...``.
        """
        quarter_turns = [_quarter_turns(angle) for angle in angles]
        if not quarter_turns:
            raise ValueError("with_rotations needs at least one angle, e.g. (0, 90, 180, 270).")
        height, width = self.images.shape[-2:]
        if height != width and any(k % 2 for k in quarter_turns):
            raise ValueError(
                f"cannot rotate {height}x{width} images by 90 or 270 degrees into one tensor; "
                "resize them to square images first."
            )
        rotated = torch.stack(
            [torch.rot90(self.images, k, dims=(-2, -1)) for k in quarter_turns], 1
        )
        names = tuple(
            f"{name}/rot{angle % 360:03d}" for name in self.class_names for angle in angles
        )
        return ClassImages(rotated.flatten(0, 1), names)

    def to(self, device: torch.device | str) -> ClassImages:
        """The same classes with the images on ``device``."""
        return ClassImages(self.images.to(device), self.class_names)


def _quarter_turns(angle: int) -> int:
    if angle % 90 != 0:
        raise ValueError(
            f"rotation angle {angle} is not a multiple of 90 degrees; use 0, 90, 180 or 270."
        )
    return (angle // 90) % 4
