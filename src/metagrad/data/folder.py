"""Your own few-shot dataset: a folder of images, one subfolder per class, or tensors by class.

Two folder layouts are read, recognised automatically:

- ``root/<class>/<image>``: every class in one place; the classes are split into ``train``,
  ``val`` and ``test`` by :func:`seeded_class_split` (64/16/20 % by default);
- ``root/train/<class>/<image>``, ``root/val/...``, ``root/test/...``: the split is given.

Images are ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.gif``, ``.webp``, ``.tif`` or ``.tiff``
files (any case); other files, hidden files and deeper subfolders are ignored. They are decoded
once per image size and setting, resized to squares with LANCZOS and cached as an ``.npz``
file like the built-in datasets.

From Python, a dict of tensors per class is a dataset too: :func:`class_images_from_tensors`,
:func:`splits_from_tensors` for given splits and :func:`seeded_split` to split one.

Example::

    splits = load_image_folder("~/data/birds", image_size=84)
    splits["train"].images.shape  # [classes, examples, 3, 84, 84], uint8
"""

from __future__ import annotations

import hashlib
import itertools
import math
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from metagrad.data.cache import Prepared, files_digest, fingerprint, load_or_decode
from metagrad.data.class_images import ClassImages
from metagrad.data.classes import check_disjoint
from metagrad.data.images import check_image_size
from metagrad.errors import ConfigError, DatasetError

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
DEFAULT_FRACTIONS = (0.64, 0.16, 0.20)
SPLIT_MODES = ("auto", "seeded", "folders")

_CACHE_VERSION = 1
_SUFFIX_LIST = ", ".join(sorted(IMAGE_SUFFIXES))

Item = TypeVar("Item")
Groups = dict[str, list[Path]]


# -- the seeded class split ----------------------------------------------------------------------


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(fractions) if isinstance(fractions, Sequence) else ()
    valid = len(values) == 3 and all(
        isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0 for f in values
    )
    if not valid or not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ConfigError(
            f"fractions must be three positive numbers for train, val and test that sum to 1, "
            f"got {fractions!r}; use e.g. {DEFAULT_FRACTIONS}."
        )
    return values


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}; use e.g. 0.")


def _split_sizes(count: int, fractions: tuple[float, float, float]) -> list[int]:
    """Class counts per split, each at least 1, as close to ``fractions`` as integers allow."""
    sizes = [max(1, round(f * count)) for f in fractions]
    while sum(sizes) > count:
        over = [i for i in range(3) if sizes[i] > 1]
        sizes[max(over, key=lambda i: sizes[i] - fractions[i] * count)] -= 1
    while sum(sizes) < count:
        sizes[min(range(3), key=lambda i: sizes[i] - fractions[i] * count)] += 1
    return sizes


def seeded_class_split(
    class_names: Iterable[str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> dict[str, list[str]]:
    """The class names of ``train``, ``val`` and ``test``, each sorted, disjoint and non-empty.

    The classes are ordered by the SHA-256 of ``"<seed>/<name>"`` and cut into parts of
    ``round(fraction * count)`` classes (adjusted so that every part has one and the parts add
    up). The split is a pure function of the set of names and the seed: no global random state,
    no dependence on the order given, the same on every machine and library version.
    """
    values = _check_fractions(fractions)
    _check_seed(seed)
    names = sorted(set(class_names))
    if len(names) < len(SPLITS):
        raise DatasetError(
            f"A seeded split needs at least 3 classes, one per split, found {len(names)}"
            f"{': ' + ', '.join(names) if names else ''}. Add classes."
        )
    ranked = sorted(names, key=lambda name: hashlib.sha256(f"{seed}/{name}".encode()).digest())
    sizes = _split_sizes(len(names), values)
    bounds = itertools.pairwise(itertools.accumulate(sizes, initial=0))
    return {
        split: sorted(ranked[start:stop])
        for split, (start, stop) in zip(SPLITS, bounds, strict=True)
    }


def seeded_split(
    images: ClassImages, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0
) -> dict[str, ClassImages]:
    """``images`` split into ``train``, ``val`` and ``test`` by :func:`seeded_class_split`."""
    position = {name: index for index, name in enumerate(images.class_names)}
    if len(position) != len(images):
        raise DatasetError(
            "The classes to split have duplicate names; give every class a name of its own."
        )
    parts = seeded_class_split(images.class_names, fractions, seed)
    return {
        split: images.subset([position[name] for name in names]) for split, names in parts.items()
    }


# -- equal class sizes ---------------------------------------------------------------------------


def _check_min_examples(min_examples: object) -> None:
    if isinstance(min_examples, bool) or not isinstance(min_examples, int) or min_examples < 1:
        raise ConfigError(
            f"min_examples must be a positive integer, got {min_examples!r}; use e.g. 2."
        )


def _first_of_each(
    groups: Mapping[str, Sequence[Item]], where: str
) -> tuple[dict[str, Sequence[Item]], str | None]:
    """The first M items of every class, M the smallest class's count (:class:`ClassImages`
    holds as many examples for every class), and a warning if that drops any."""
    examples = min(len(items) for items in groups.values())
    kept = {name: items[:examples] for name, items in groups.items()}
    larger = {name: len(items) for name, items in groups.items() if len(items) > examples}
    if not larger:
        return kept, None
    dropped = sum(larger.values()) - examples * len(larger)
    shown = ", ".join(f"{name} ({count})" for name, count in list(larger.items())[:3])
    return kept, (
        f"The classes of {where} have different numbers of images; keeping the first "
        f"{examples} of each, as every class needs the same number. Dropped {dropped} images "
        f"of {len(larger)} classes, e.g. {shown}."
    )


# -- tensors -------------------------------------------------------------------------------------


def _as_uint8(name: str, tensor: object) -> torch.Tensor:
    """One class's examples as uint8 ``[M, C, H, W]``, C 1 or 3."""
    if not isinstance(tensor, torch.Tensor):
        raise DatasetError(
            f"Class {name!r} is a {type(tensor).__name__}, expected a torch.Tensor "
            "[examples, channels, height, width]; convert arrays with torch.from_numpy."
        )
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(1)
    if tensor.dim() != 4 or tensor.shape[1] not in (1, 3):
        raise DatasetError(
            f"Class {name!r} has shape {tuple(tensor.shape)}, expected [examples, channels, "
            "height, width] with 1 or 3 channels, or [examples, height, width]; permute "
            "channels-last images with .permute(0, 3, 1, 2)."
        )
    if tensor.dtype == torch.uint8:
        return tensor
    if not tensor.is_floating_point():
        raise DatasetError(
            f"Class {name!r} has dtype {tensor.dtype}; use uint8 pixels in [0, 255] or floats "
            "in [0, 1]."
        )
    if tensor.numel() and not (
        torch.isfinite(tensor).all() and 0 <= tensor.min() <= tensor.max() <= 1
    ):
        raise DatasetError(
            f"Class {name!r} holds floats outside [0, 1] (min {tensor.min().item():g}, max "
            f"{tensor.max().item():g}); scale them to [0, 1], or pass uint8 pixels in [0, 255]."
        )
    return (tensor * 255).round().to(torch.uint8)


def class_images_from_tensors(
    classes: Mapping[Any, torch.Tensor], *, min_examples: int = 2
) -> ClassImages:
    """A dict of images per class as :class:`ClassImages`, classes in the dict's order.

    Each value is ``[M, C, H, W]`` (C = 1 or 3) or ``[M, H, W]``, uint8 in [0, 255] or float in
    [0, 1] (stored as uint8, rounded); all share C, H and W. Class names are ``str(key)``.
    Classes of different sizes keep their first M examples, M the smallest size, with a
    warning; a class with fewer than ``min_examples`` is an error.
    """
    _check_min_examples(min_examples)
    if not isinstance(classes, Mapping) or not classes:
        raise DatasetError(
            f"Expected a non-empty dict of class -> image tensor, got {classes!r:.80}."
        )
    tensors: dict[str, torch.Tensor] = {}
    for key, value in classes.items():
        name = str(key)
        if name in tensors:
            raise DatasetError(f"Two classes are both named {name!r}; give them distinct keys.")
        tensors[name] = _as_uint8(name, value)
    first_name, first = next(iter(tensors.items()))
    for name, tensor in tensors.items():
        if tensor.shape[1:] != first.shape[1:] or tensor.device != first.device:
            raise DatasetError(
                f"Class {name!r} holds {tuple(tensor.shape[1:])} images on {tensor.device} but "
                f"class {first_name!r} {tuple(first.shape[1:])} on {first.device}; every class "
                "needs images of one shape [channels, height, width] on one device."
            )
        if len(tensor) < min_examples:
            raise DatasetError(
                f"Class {name!r} has {len(tensor)} examples, fewer than min_examples = "
                f"{min_examples}; add examples, drop the class or lower min_examples."
            )
    kept, dropped = _first_of_each(tensors, "the given tensors")
    if dropped:
        warnings.warn(dropped, stacklevel=2)
    return ClassImages(torch.stack(list(kept.values())), tuple(kept))


def splits_from_tensors(
    *,
    train: Mapping[Any, torch.Tensor],
    val: Mapping[Any, torch.Tensor],
    test: Mapping[Any, torch.Tensor],
    min_examples: int = 2,
) -> dict[str, ClassImages]:
    """Given splits of tensors per class (see :func:`class_images_from_tensors`) as
    :class:`ClassImages`; the splits must not share a class name and must have one image
    shape. Each split keeps its own number of examples per class."""
    parts = {
        split: class_images_from_tensors(classes, min_examples=min_examples)
        for split, classes in zip(SPLITS, (train, val, test), strict=True)
    }
    check_disjoint(
        {split: images.class_names for split, images in parts.items()},
        "the given tensors",
        "give every class to one split only",
    )
    shapes = {split: tuple(images.images.shape[2:]) for split, images in parts.items()}
    if len(set(shapes.values())) > 1:
        raise DatasetError(
            f"The splits hold images of different shapes {shapes}; every split needs images "
            "of one shape [channels, height, width]."
        )
    return parts


# -- reading the folder --------------------------------------------------------------------------


def _visible(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if not path.name.startswith("."))


def _subfolders(folder: Path) -> list[Path]:
    return [path for path in _visible(folder) if path.is_dir()]


def _image_files(folder: Path) -> list[Path]:
    return [
        path
        for path in _visible(folder)
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    ]


def _listing(names: Iterable[str]) -> str:
    return ", ".join(f"{name}/" for name in sorted(names))


def _check_root(root: str | Path) -> Path:
    folder = Path(root).expanduser()
    if not folder.exists():
        raise DatasetError(
            f"The image folder {folder} does not exist. Pass the folder holding one subfolder "
            "of images per class (or train/, val/ and test/ holding those)."
        )
    if not folder.is_dir():
        raise DatasetError(
            f"{folder} is a file, not a folder. Pass the folder holding one subfolder of "
            "images per class (or train/, val/ and test/ holding those)."
        )
    return folder


def _resolve_mode(root: Path, split: str) -> str:
    if split not in SPLIT_MODES:
        raise ConfigError(
            f"split must be one of {', '.join(map(repr, SPLIT_MODES))}, got {split!r}: "
            "'folders' reads root/train, root/val and root/test, 'seeded' splits the classes "
            "in root, 'auto' picks 'folders' when root holds exactly those three folders."
        )
    if split != "auto":
        return split
    names = {folder.name for folder in _subfolders(root)}
    if names == set(SPLITS):
        return "folders"
    if names & set(SPLITS):
        raise DatasetError(
            f"{root} holds {_listing(names & set(SPLITS))} among its subfolders "
            f"{_listing(names)}, so it is unclear whether they are splits or classes. For given "
            "splits keep exactly train/, val/ and test/ there; to treat every subfolder as a "
            "class, pass split='seeded'."
        )
    return "seeded"


def _classes(folder: Path, min_examples: int) -> Groups:
    """The image files of every class folder in ``folder``, checked against ``min_examples``."""
    groups = {sub.name: _image_files(sub) for sub in _subfolders(folder)}
    if not groups:
        loose = len(_image_files(folder))
        detail = f" (it holds {loose} images directly)" if loose else ""
        raise DatasetError(
            f"{folder} has no class folders{detail}. Put the images of each class in a "
            f"subfolder of its own: {folder}/<class>/<image>."
        )
    for name, files in groups.items():
        if len(files) < min_examples:
            raise DatasetError(
                f"Class folder {folder / name} has {len(files)} images, fewer than "
                f"min_examples = {min_examples} (only {_SUFFIX_LIST} files count). Add images "
                "to it or remove it, or lower min_examples."
            )
    return groups


def _split_groups(
    root: Path, mode: str, fractions: Sequence[float], seed: int, min_examples: int
) -> dict[str, Groups]:
    if mode == "seeded":
        classes = _classes(root, min_examples)
        parts = seeded_class_split(classes, fractions, seed)
        return {split: {name: classes[name] for name in names} for split, names in parts.items()}
    missing = [split for split in SPLITS if not (root / split).is_dir()]
    if missing:
        raise DatasetError(
            f"{root} has no {_listing(missing)} folder: split='folders' reads "
            f"{root}/train/<class>/<image>, {root}/val/... and {root}/test/.... Add it, or pass "
            "split='seeded' to split the classes of one folder."
        )
    groups = {split: _classes(root / split, min_examples) for split in SPLITS}
    check_disjoint(
        {split: list(classes) for split, classes in groups.items()},
        str(root),
        "keep every class folder in one split only",
    )
    return groups


def _decode(path: Path, mode: str, size: int) -> np.ndarray:
    """One image file as uint8 ``[C, size, size]``, C = 1 for mode ``"L"``, 3 for ``"RGB"``."""
    try:
        with Image.open(path) as image:
            image.load()
            converted = image.convert(mode)
    except (OSError, SyntaxError, ValueError, zlib.error, Image.DecompressionBombError) as exc:
        raise DatasetError(
            f"Cannot read the image {path}: {exc}. The file is corrupt, truncated or not an "
            "image: replace it or delete it."
        ) from exc
    if converted.size != (size, size):
        converted = converted.resize((size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(converted, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _stack(groups: Mapping[str, Sequence[Path]], mode: str, size: int) -> ClassImages:
    examples = len(next(iter(groups.values())))
    channels = 1 if mode == "L" else 3
    images = np.empty((len(groups), examples, channels, size, size), dtype=np.uint8)
    for c, files in enumerate(groups.values()):
        for e, file in enumerate(files):
            images[c, e] = _decode(file, mode, size)
    return ClassImages(torch.from_numpy(images), tuple(groups))


def _has_colour(images: ClassImages) -> bool:
    pixels = images.images
    return bool(
        (pixels[:, :, 0] != pixels[:, :, 1]).any() or (pixels[:, :, 1] != pixels[:, :, 2]).any()
    )


def _greyscale_if_colourless(parts: dict[str, ClassImages]) -> dict[str, ClassImages]:
    """RGB images with equal channels everywhere, in every split, as one grey channel."""
    if any(_has_colour(images) for images in parts.values()):
        return parts
    return {
        split: ClassImages(images.images[:, :, :1].contiguous(), images.class_names)
        for split, images in parts.items()
    }


def prepare_image_folder(
    root: str | Path,
    *,
    image_size: int,
    channels: int | None = None,
    split: str = "auto",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    min_examples: int = 2,
    cache_dir: str | Path | None = None,
) -> Prepared:
    """:func:`load_image_folder`'s splits, with the cache file they were read from or
    written to."""
    check_image_size(image_size, "84 for natural images or 28 for characters")
    if channels not in (None, 1, 3) or isinstance(channels, bool):
        raise ConfigError(
            f"channels must be 1 (greyscale), 3 (RGB) or None (RGB if any image has colour), "
            f"got {channels!r}."
        )
    _check_fractions(fractions)
    _check_seed(seed)
    _check_min_examples(min_examples)
    folder = _check_root(root)
    mode = _resolve_mode(folder, split)
    groups: dict[str, dict[str, Sequence[Path]]] = {}
    for part, classes in _split_groups(folder, mode, fractions, seed, min_examples).items():
        groups[part], dropped = _first_of_each(classes, f"the {part} split of {folder}")
        if dropped:
            warnings.warn(dropped, stacklevel=3)
    files = [file for classes in groups.values() for f in classes.values() for file in f]
    try:
        digest = files_digest(files, folder)
    except OSError as exc:
        raise DatasetError(f"Cannot read {exc.filename}: {exc.strerror}.") from exc
    key = fingerprint(
        _CACHE_VERSION, image_size, channels, mode, list(fractions), seed, min_examples, digest
    )
    wanted_channels = (1, 3) if channels is None else (channels,)

    def fits(parts: Mapping[str, ClassImages]) -> bool:
        return set(parts) == set(SPLITS) and all(
            parts[part].class_names == tuple(classes)
            and parts[part].images.shape[1] == len(next(iter(classes.values())))
            and parts[part].images.shape[2] in wanted_channels
            and parts[part].images.shape[3:] == (image_size, image_size)
            for part, classes in groups.items()
        )

    def decode() -> dict[str, ClassImages]:
        pil_mode = "L" if channels == 1 else "RGB"
        parts = {part: _stack(classes, pil_mode, image_size) for part, classes in groups.items()}
        return _greyscale_if_colourless(parts) if channels is None else parts

    return load_or_decode(
        f"imagefolder-{image_size}px-{key}.npz",
        folder,
        cache_dir,
        f"image folder {folder}",
        decode,
        fits=fits,
    )


def load_image_folder(
    root: str | Path,
    *,
    image_size: int,
    channels: int | None = None,
    split: str = "auto",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    min_examples: int = 2,
    cache_dir: str | Path | None = None,
) -> dict[str, ClassImages]:
    """The ``train``, ``val`` and ``test`` splits of an image folder, each uint8
    ``[classes, M, channels, image_size, image_size]``.

    ``split="auto"`` reads ``root/train``, ``root/val`` and ``root/test`` when those are exactly
    the subfolders of ``root`` and splits the classes of ``root`` otherwise; ``"folders"`` and
    ``"seeded"`` force one reading. The seeded split (:func:`seeded_class_split`) is a pure
    function of the class names, ``fractions`` (train, val, test) and ``seed``.

    Classes (folder names) are sorted, and so are the images of a class, by file name. Every
    class of a split must hold the same number of images, so a split whose classes differ keeps
    the first M images of each, M the size of its smallest class, and warns; a class with
    fewer than ``min_examples`` images is an error rather than a reason to shrink the others.

    ``channels=None`` gives RGB if any image has colour (channels that differ anywhere) and one
    grey channel otherwise; ``1`` or ``3`` converts every image (grey with ITU-R 601 luma).
    Images are resized to ``image_size`` squares, without cropping, with a LANCZOS filter.

    The decoded images are cached as ``imagefolder-<S>px-<fingerprint>.npz`` in ``cache_dir``,
    else in ``root`` or, if that is read-only, in ``~/.cache/metagrad``. The fingerprint covers
    the settings and the image files' names, sizes and modification times, so adding, removing
    or changing an image decodes the folder again.
    """
    return prepare_image_folder(
        root,
        image_size=image_size,
        channels=channels,
        split=split,
        fractions=fractions,
        seed=seed,
        min_examples=min_examples,
        cache_dir=cache_dir,
    ).splits
