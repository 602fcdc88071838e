"""Examples grouped by class, and the checks that every class of a split has what it should."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

from metagrad.data.class_images import ClassImages
from metagrad.errors import DatasetError

Label = TypeVar("Label", bound=Hashable)
Item = TypeVar("Item")


def group_positions(labels: Iterable[Label]) -> dict[Label, list[int]]:
    """The positions of each label, labels in order of first appearance, positions ascending."""
    groups: dict[Label, list[int]] = {}
    for position, label in enumerate(labels):
        groups.setdefault(label, []).append(position)
    return groups


PARTIAL_COPY = (
    "To use a partial copy on purpose: from Python, pass expected_classes=None; from the "
    "command line, give its images as one folder per class (task.dataset: folder)."
)


def check_num_classes(num_classes: int, expected: int | None, where: str, fix: str) -> None:
    if expected is not None and num_classes != expected:
        raise DatasetError(
            f"Found {num_classes} classes in {where}, expected {expected}. To fix: {fix}. "
            + PARTIAL_COPY
        )


def equal_counts(
    groups: Mapping[str, Sequence[Item]], expected: int | None, where: str, fix: str
) -> None:
    """Every class has ``expected`` examples (or, if ``None``, as many as the first class)."""
    if not groups:
        return
    wanted = expected if expected is not None else len(next(iter(groups.values())))
    for name, items in groups.items():
        if len(items) != wanted:
            if expected is None:
                rule, partial = f"the first has {wanted}", ""
            else:
                rule = f"expected {expected}"
                partial = "; to load a copy of another size, pass expected_examples=None"
            raise DatasetError(
                f"Class {name} of {where} has {len(items)} images, {rule}: every class of this "
                f"dataset has the same number. To fix: {fix}{partial}."
            )


def first_of_each(
    groups: Mapping[str, Sequence[Item]], min_examples: int, where: str, fix: str
) -> dict[str, Sequence[Item]]:
    """The first M items of every class, M the smallest class's count, for ragged datasets.

    A class with fewer than ``min_examples`` items is an error rather than a reason to shrink
    every class to its size.
    """
    for name, items in groups.items():
        if len(items) < min_examples:
            raise DatasetError(
                f"Class {name} of {where} has {len(items)} images, fewer than min_examples = "
                f"{min_examples}. To fix: {fix}; to accept smaller classes, lower min_examples."
            )
    examples = min((len(items) for items in groups.values()), default=0)
    return {name: items[:examples] for name, items in groups.items()}


def check_disjoint(classes: Mapping[str, Iterable[str]], where: str, fix: str) -> None:
    """No class name appears in two splits."""
    seen: dict[str, str] = {}
    for split, names in classes.items():
        for name in names:
            if seen.setdefault(name, split) != split:
                raise DatasetError(
                    f"Class {name} of {where} is in both the {seen[name]} and the {split} split; "
                    f"the splits must be disjoint. To fix: {fix}."
                )


def splits_fit(
    parts: Mapping[str, ClassImages],
    splits: Sequence[str],
    size: int,
    expected_classes: Mapping[str, int] | None,
    examples_ok: Callable[[int], bool],
) -> bool:
    """Whether cached parts are exactly ``splits`` of RGB ``size`` images with the right counts."""
    return set(parts) == set(splits) and all(
        images.images.shape[2:] == (3, size, size)
        and (expected_classes is None or len(images) == expected_classes[split])
        and examples_ok(images.num_examples)
        for split, images in parts.items()
    )
