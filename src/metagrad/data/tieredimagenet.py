"""tiered-ImageNet (Ren et al., 2018): 608 ImageNet classes split by high-level category.

351 classes for meta-training, 97 for validation, 160 for testing, in the common release of
84x84 images: per split ``{split}_labels.pkl`` (a dict with ``label_specific``, one class
index per image, and ``label_specific_str``, the class names) and either
``{split}_images_png.pkl`` (a list of PNG-encoded images) or ``{split}_images.npz`` (key
``images``, uint8 ``[N, 84, 84, 3]``). The pickles of the original release were written by
Python 2; both Python 2 and Python 3 pickles are read.

Unlike mini-ImageNet, the classes are ragged: each holds the ImageNet training images of its
class, 732 to 1300. :func:`load_tieredimagenet` keeps the first M images of every class of a
split, M the size of the split's smallest class, so that a split is one ``[C, M, 3, S, S]``
block.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from metagrad.data.cache import Prepared, files_digest, fingerprint, load_or_decode
from metagrad.data.class_images import ClassImages
from metagrad.data.classes import check_disjoint, check_num_classes, first_of_each, splits_fit
from metagrad.data.images import check_image_size, decode_rgb, resize_rgb, stack_classes
from metagrad.data.locate import search_folders
from metagrad.data.pickles import as_bytes, as_text, describe, load_pickle, text_keys
from metagrad.errors import DatasetError

SPLITS = ("train", "val", "test")
NUM_CLASSES = {"train": 351, "val": 97, "test": 160}
MIN_EXAMPLES = 600  # below every class of the release, so a smaller class is a damaged one

_CACHE_VERSION = 1
_FIX = "copy it again from your tiered-ImageNet source"

Decode = Callable[[int], np.ndarray]


def _labels_file(folder: Path, split: str) -> Path:
    return folder / f"{split}_labels.pkl"


def _image_files(folder: Path, split: str) -> list[Path]:
    """The image files a split may come in, the preferred (already decoded) one first."""
    return [folder / f"{split}_images.npz", folder / f"{split}_images_png.pkl"]


def _sources(folder: Path) -> tuple[dict[str, tuple[Path, Path]], list[str], bool]:
    """The (labels, images) files of every complete split, the names of the missing files, and
    whether any of the files is there."""
    found, missing, present = {}, [], False
    for split in SPLITS:
        labels = _labels_file(folder, split)
        images = next((path for path in _image_files(folder, split) if path.is_file()), None)
        present = present or labels.is_file() or images is not None
        if not labels.is_file():
            missing.append(labels.name)
        if images is None:
            missing.append(" or ".join(path.name for path in _image_files(folder, split)))
        elif labels.is_file():
            found[split] = (labels, images)
    return found, missing, present


def _locate(root: str | Path | None) -> tuple[Path, dict[str, tuple[Path, Path]]]:
    folders = search_folders(root, "tieredimagenet")
    scanned = [(folder, *_sources(folder)) for folder in folders]
    for folder, found, missing, _ in scanned:
        if not missing:
            return folder, found
    for folder, _, missing, present in scanned:
        if present:
            raise DatasetError(
                f"tiered-ImageNet in {folder} is incomplete: {', '.join(missing)} not found. "
                "Every split (train, val, test) needs its labels pickle and its images. Add the "
                "missing files, or move the partial copy away."
            )
    raise DatasetError(
        f"tiered-ImageNet not found in {' or '.join(map(str, folders))}. It has no "
        "checksum-verified public download, so it cannot be fetched for you: put, for each of "
        "the splits train, val and test, {split}_labels.pkl (a dict with label_specific and "
        "label_specific_str) and {split}_images_png.pkl (a list of PNG-encoded images) or "
        "{split}_images.npz (key images, uint8 [N, 84, 84, 3]) in one of those folders. Pass "
        "that folder with --data-root (root=...) or set METAGRAD_DATA to it; a tieredimagenet/ "
        "subfolder of it works too."
    )


def _read_labels(path: Path) -> tuple[np.ndarray, list[str]]:
    """The class index of every image and the class names."""
    content = text_keys(load_pickle(path, _FIX), str(path), _FIX)
    labels, names = content.get("label_specific"), content.get("label_specific_str")
    if labels is None or names is None:
        raise DatasetError(
            f"{path} has no label_specific or label_specific_str (its keys: "
            f"{sorted(map(str, content))}). It is not a tiered-ImageNet labels pickle: {_FIX}."
        )
    labels = np.asarray(labels)
    names = [str(as_text(name)) for name in names]
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise DatasetError(
            f"label_specific in {path} is {describe(labels)}, expected one integer class index "
            f"per image. The file is damaged: {_FIX}."
        )
    if labels.size and not 0 <= labels.min() <= labels.max() < len(names):
        raise DatasetError(
            f"label_specific in {path} has class indices from {labels.min()} to {labels.max()} "
            f"but label_specific_str names {len(names)} classes. The file is damaged: {_FIX}."
        )
    if len(set(names)) != len(names):
        raise DatasetError(
            f"label_specific_str in {path} names a class twice. The file is damaged: {_FIX}."
        )
    return labels, names


def _png_decoder(path: Path, count: int, size: int) -> Decode:
    items = load_pickle(path, _FIX)
    if not isinstance(items, (list, tuple, np.ndarray)) or len(items) != count:
        length = f" of length {len(items)}" if isinstance(items, (list, tuple)) else ""
        raise DatasetError(
            f"{path} holds {describe(items)}{length}, expected a list of {count} PNG-encoded "
            f"images, one per label. The file is damaged or does not belong with its labels: "
            f"{_FIX}."
        )

    def decode(index: int) -> np.ndarray:
        data = as_bytes(items[index])
        if data is None:
            raise DatasetError(
                f"Image {index} of {path} is {describe(items[index])}, expected PNG bytes. "
                f"The file is damaged: {_FIX}."
            )
        return decode_rgb(data, f"{path} (image {index})", size, _FIX)

    return decode


def _npz_decoder(path: Path, count: int, size: int) -> Decode:
    try:
        with np.load(path, allow_pickle=False) as content:
            pixels = content["images"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(
            f"Cannot read the images array of {path} ({exc}). The file is damaged or has no "
            f"'images' key: {_FIX}."
        ) from exc
    if not (
        pixels.dtype == np.uint8
        and pixels.ndim == 4
        and pixels.shape[3] == 3
        and len(pixels) == count
    ):
        raise DatasetError(
            f"images in {path} is {describe(pixels)}, expected uint8 [{count}, H, W, 3], one RGB "
            f"image per label. The file is damaged or does not belong with its labels: {_FIX}."
        )
    return lambda index: resize_rgb(pixels[index], size)


def _decode_split(
    split: str,
    labels_file: Path,
    images_file: Path,
    size: int,
    expected_classes: int | None,
    min_examples: int,
) -> ClassImages:
    labels, names = _read_labels(labels_file)
    where = f"the tiered-ImageNet {split} split ({labels_file})"
    check_num_classes(len(names), expected_classes, where, _FIX)
    positions = {name: [] for name in names}
    for position, label in enumerate(labels.tolist()):
        positions[names[label]].append(position)
    groups = first_of_each(positions, min_examples, where, _FIX)
    make = _npz_decoder if images_file.suffix == ".npz" else _png_decoder
    return stack_classes(groups, make(images_file, len(labels), size), size)


def prepare_tieredimagenet(
    root: str | Path | None = None,
    *,
    image_size: int = 84,
    cache_dir: str | Path | None = None,
    expected_classes: Mapping[str, int] | None = NUM_CLASSES,
    min_examples: int = MIN_EXAMPLES,
) -> Prepared:
    """:func:`load_tieredimagenet`'s splits, with the cache file they were read from or
    written to."""
    check_image_size(image_size, "84 (the usual setting)")
    folder, sources = _locate(root)
    files = [file for pair in sources.values() for file in pair]
    try:
        key = fingerprint(_CACHE_VERSION, image_size, files_digest(files, folder))
    except OSError as exc:
        raise DatasetError(f"Cannot read {exc.filename}: {exc.strerror}. To fix: {_FIX}.") from exc

    def fits(parts: Mapping[str, ClassImages]) -> bool:
        return splits_fit(parts, SPLITS, image_size, expected_classes, lambda m: m >= min_examples)

    def decode() -> dict[str, ClassImages]:
        parts = {
            split: _decode_split(
                split,
                labels,
                images,
                image_size,
                None if expected_classes is None else expected_classes[split],
                min_examples,
            )
            for split, (labels, images) in sources.items()
        }
        names = {split: images.class_names for split, images in parts.items()}
        check_disjoint(names, f"tiered-ImageNet in {folder}", _FIX)
        return parts

    return load_or_decode(
        f"tieredimagenet-{image_size}px-{key}.npz",
        folder,
        cache_dir,
        "tiered-ImageNet",
        decode,
        fits=fits,
    )


def load_tieredimagenet(
    root: str | Path | None = None,
    *,
    image_size: int = 84,
    cache_dir: str | Path | None = None,
    expected_classes: Mapping[str, int] | None = NUM_CLASSES,
    min_examples: int = MIN_EXAMPLES,
) -> dict[str, ClassImages]:
    """tiered-ImageNet's ``train``, ``val`` and ``test`` splits, each ``[C, M, 3, S, S]`` uint8.

    Classes come in label order, named by ``label_specific_str`` (ImageNet ids). The classes
    are ragged, so each split keeps the first M images of every class, in file order, where M
    is the number of images of its smallest class. A class with fewer than ``min_examples``
    images (the release has none) is an error rather than a reason to shrink the whole split.
    Images are converted to RGB and resized to ``image_size`` with a LANCZOS filter.

    ``root`` is the folder holding the files (see the module docstring), or a folder whose
    ``tieredimagenet/`` subfolder does; without it ``METAGRAD_DATA`` is used, else
    ``~/.cache/metagrad``. The decoded images are cached as
    ``tieredimagenet-<S>px-<fingerprint>.npz`` in ``cache_dir``, else next to the data or, if
    that is read-only, in ``~/.cache/metagrad``. ``expected_classes`` is the number of classes
    of each split; ``None`` accepts a partial copy. Pickles can run code when loaded: only use
    files you trust.
    """
    return prepare_tieredimagenet(
        root,
        image_size=image_size,
        cache_dir=cache_dir,
        expected_classes=expected_classes,
        min_examples=min_examples,
    ).splits
