"""mini-ImageNet (Vinyals et al., 2016) with the class split of Ravi and Larochelle (2017).

100 ImageNet classes of 600 images each: 64 for meta-training, 16 for validation, 20 for
testing. It has no stable public download with a checksum, so it is read from a folder holding
any one of the three forms it is usually shared in, recognised automatically:

- ``train.csv``, ``val.csv``, ``test.csv`` (header ``filename,label``) and ``images/`` with the
  JPEG files they name, as released by Ravi and Larochelle;
- ``mini-imagenet-cache-{train,val,test}.pkl``: dicts with ``image_data``, uint8
  ``[N, 84, 84, 3]``, and ``class_dict``, class name -> indices into ``image_data``;
- ``train/``, ``val/``, ``test/`` holding one folder of ``.jpg`` (``.jpeg``, ``.png``) images
  per class.

:func:`load_miniimagenet` decodes it once per image size into one uint8 :class:`ClassImages` per
split and caches the result as an ``.npz`` file.
"""

from __future__ import annotations

import csv
import io
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from metagrad.data.cache import Prepared, files_digest, fingerprint, load_or_decode
from metagrad.data.class_images import ClassImages
from metagrad.data.classes import check_disjoint, check_num_classes, equal_counts, splits_fit
from metagrad.data.images import check_image_size, decode_rgb, resize_rgb, stack_classes
from metagrad.data.locate import search_folders
from metagrad.data.pickles import describe, load_pickle, text_keys
from metagrad.errors import DatasetError

SPLITS = ("train", "val", "test")
NUM_CLASSES = {"train": 64, "val": 16, "test": 20}
NUM_EXAMPLES = 600
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

_CACHE_VERSION = 1
_FIX = "copy it again from your mini-ImageNet source"

Groups = dict[str, list[Any]]
Decode = Callable[[Any], np.ndarray]


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc}. To fix: {_FIX}.") from exc


def _digest(files: list[Path], folder: Path) -> str:
    try:
        return files_digest(files, folder)
    except OSError as exc:
        raise DatasetError(
            f"Cannot read {exc.filename}, part of mini-ImageNet in {folder}: {exc.strerror}. "
            f"The copy is incomplete: {_FIX}."
        ) from exc


class _Layout(ABC):
    """One of the forms mini-ImageNet is shared in, in one folder."""

    kind: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @abstractmethod
    def required(self) -> list[Path]:
        """The files and folders this form consists of."""

    def missing(self) -> list[Path]:
        return [path for path in self.required() if not path.exists()]

    @abstractmethod
    def fingerprint(self) -> str:
        """Changes whenever the content of the source does (names, sizes, modification times)."""

    @abstractmethod
    def split(self, split: str, size: int) -> tuple[str, Groups, Decode]:
        """Where the split is (for messages), its items by class, and how to decode an item."""


class _CsvLayout(_Layout):
    kind = "csv"
    description = (
        "train.csv, val.csv and test.csv (header filename,label; the Ravi & Larochelle split) "
        "and images/ holding the JPEG files they name"
    )

    def required(self) -> list[Path]:
        return [self.folder / f"{split}.csv" for split in SPLITS] + [self.folder / "images"]

    @cached_property
    def _groups(self) -> dict[str, Groups]:
        return {split: self._read_csv(self.folder / f"{split}.csv") for split in SPLITS}

    def _read_csv(self, path: Path) -> Groups:
        try:
            rows = list(csv.reader(io.StringIO(path.read_text("utf-8"))))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DatasetError(f"Cannot read {path}: {exc}. To fix: {_FIX}.") from exc
        if not rows or [cell.strip() for cell in rows[0]] != ["filename", "label"]:
            raise DatasetError(
                f"{path} starts with {rows[0] if rows else 'nothing'}, expected the header "
                f"filename,label of the Ravi & Larochelle split files. To fix: {_FIX}."
            )
        groups: Groups = {}
        for line, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            if len(row) != 2:
                raise DatasetError(
                    f"{path} line {line} is {row}, expected two fields: filename,label. "
                    f"To fix: {_FIX}."
                )
            filename, label = (cell.strip() for cell in row)
            groups.setdefault(label, []).append(self.folder / "images" / filename)
        return dict(sorted(groups.items()))

    def fingerprint(self) -> str:
        images = [file for groups in self._groups.values() for f in groups.values() for file in f]
        return _digest(self.required()[:3] + images, self.folder)

    def split(self, split: str, size: int) -> tuple[str, Groups, Decode]:
        def decode(path: Path) -> np.ndarray:
            return decode_rgb(_read_bytes(path), str(path), size, _FIX)

        return str(self.folder / f"{split}.csv"), self._groups[split], decode


class _PickleLayout(_Layout):
    kind = "pickle"
    description = (
        "mini-imagenet-cache-train.pkl, mini-imagenet-cache-val.pkl and "
        "mini-imagenet-cache-test.pkl (dicts with image_data, uint8 [N, 84, 84, 3], and "
        "class_dict, class name -> indices into image_data)"
    )

    def required(self) -> list[Path]:
        return [self.folder / f"mini-imagenet-cache-{split}.pkl" for split in SPLITS]

    def fingerprint(self) -> str:
        return _digest(self.required(), self.folder)

    def split(self, split: str, size: int) -> tuple[str, Groups, Decode]:
        path = self.folder / f"mini-imagenet-cache-{split}.pkl"
        content = text_keys(load_pickle(path, _FIX), str(path), _FIX)
        absent = sorted({"image_data", "class_dict"} - set(content))
        if absent:
            raise DatasetError(
                f"{path} has no {' or '.join(absent)} (its keys: {sorted(map(str, content))}). "
                f"It is not a mini-ImageNet cache pickle: {_FIX}."
            )
        pixels = content["image_data"]
        if not (
            isinstance(pixels, np.ndarray)
            and pixels.dtype == np.uint8
            and pixels.ndim == 4
            and pixels.shape[3] == 3
        ):
            raise DatasetError(
                f"image_data in {path} is {describe(pixels)}, expected a uint8 array [N, H, W, 3] "
                f"of N RGB images. The file is damaged or of another release: {_FIX}."
            )
        groups: Groups = {}
        for name, value in sorted(text_keys(content["class_dict"], str(path), _FIX).items()):
            indices = _indices(value, len(pixels))
            if indices is None:
                raise DatasetError(
                    f"class_dict[{name!r}] in {path} is {describe(value)}, not a list of indices "
                    f"into the {len(pixels)} images of image_data. The file is damaged: {_FIX}."
                )
            groups[str(name)] = indices
        return str(path), groups, lambda index: resize_rgb(pixels[index], size)


def _indices(value: Any, count: int) -> list[int] | None:
    """``value`` as a list of indices into ``count`` images, or ``None`` if it is not one."""
    positions = np.asarray(value)
    if positions.ndim != 1 or (positions.size and positions.dtype.kind not in "iu"):
        return None
    if positions.size and not 0 <= positions.min() <= positions.max() < count:
        return None
    return positions.tolist()


class _FolderLayout(_Layout):
    kind = "folders"
    description = "train/, val/ and test/ holding one folder of .jpg (.jpeg, .png) images per class"

    def required(self) -> list[Path]:
        return [self.folder / split for split in SPLITS]

    @cached_property
    def _groups(self) -> dict[str, Groups]:
        return {split: _image_folders(self.folder / split) for split in SPLITS}

    def fingerprint(self) -> str:
        files = [file for groups in self._groups.values() for f in groups.values() for file in f]
        return _digest(files, self.folder)

    def split(self, split: str, size: int) -> tuple[str, Groups, Decode]:
        def decode(path: Path) -> np.ndarray:
            return decode_rgb(_read_bytes(path), str(path), size, _FIX)

        return str(self.folder / split), self._groups[split], decode


def _visible(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if not path.name.startswith("."))


def _image_folders(folder: Path) -> Groups:
    return {
        class_folder.name: [
            file
            for file in _visible(class_folder)
            if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file()
        ]
        for class_folder in _visible(folder)
        if class_folder.is_dir()
    }


_LAYOUTS: tuple[type[_Layout], ...] = (_CsvLayout, _PickleLayout, _FolderLayout)


def _label(path: Path) -> str:
    """A required file's name, with a slash for the folders (which have no suffix)."""
    return path.name if path.suffix else f"{path.name}/"


def _locate(root: str | Path | None) -> _Layout:
    folders = search_folders(root, "miniimagenet")
    candidates = [layout(folder) for folder in folders for layout in _LAYOUTS]
    for candidate in candidates:
        if not candidate.missing():
            return candidate
    for candidate in candidates:
        missing = candidate.missing()
        if len(missing) < len(candidate.required()):
            found = [_label(p) for p in candidate.required() if p not in missing]
            raise DatasetError(
                f"mini-ImageNet in {candidate.folder} is incomplete: found {', '.join(found)} "
                f"but not {', '.join(map(_label, missing))} (the form: "
                f"{candidate.description}). Add the missing files, or move the partial copy away."
            )
    forms = "; ".join(
        f"({letter}) {layout.description}" for letter, layout in zip("abc", _LAYOUTS, strict=True)
    )
    raise DatasetError(
        f"mini-ImageNet not found in {' or '.join(map(str, folders))}. It has no "
        "checksum-verified public download, so it cannot be fetched for you: put one of these "
        f"forms of it in one of those folders: {forms}. Pass that folder with --data-root "
        "(root=...) or set METAGRAD_DATA to it; a miniimagenet/ subfolder of it works too."
    )


def prepare_miniimagenet(
    root: str | Path | None = None,
    *,
    image_size: int = 84,
    cache_dir: str | Path | None = None,
    expected_classes: Mapping[str, int] | None = NUM_CLASSES,
    expected_examples: int | None = NUM_EXAMPLES,
) -> Prepared:
    """:func:`load_miniimagenet`'s splits, with the cache file they were read from or written to."""
    check_image_size(image_size, "84 (the usual setting)")
    layout = _locate(root)
    key = fingerprint(_CACHE_VERSION, image_size, layout.kind, layout.fingerprint())

    def fits(parts: Mapping[str, ClassImages]) -> bool:
        return splits_fit(
            parts, SPLITS, image_size, expected_classes, lambda m: expected_examples in (None, m)
        )

    def decode() -> dict[str, ClassImages]:
        parts = {}
        for split in SPLITS:
            where, groups, decode_one = layout.split(split, image_size)
            where = f"the mini-ImageNet {split} split ({where})"
            expected = None if expected_classes is None else expected_classes[split]
            check_num_classes(len(groups), expected, where, _FIX)
            equal_counts(groups, expected_examples, where, _FIX)
            parts[split] = stack_classes(groups, decode_one, image_size)
        names = {split: images.class_names for split, images in parts.items()}
        check_disjoint(names, f"mini-ImageNet in {layout.folder}", _FIX)
        return parts

    return load_or_decode(
        f"miniimagenet-{image_size}px-{key}.npz",
        layout.folder,
        cache_dir,
        "mini-ImageNet",
        decode,
        fits=fits,
    )


def load_miniimagenet(
    root: str | Path | None = None,
    *,
    image_size: int = 84,
    cache_dir: str | Path | None = None,
    expected_classes: Mapping[str, int] | None = NUM_CLASSES,
    expected_examples: int | None = NUM_EXAMPLES,
) -> dict[str, ClassImages]:
    """mini-ImageNet's ``train``, ``val`` and ``test`` splits, each ``[C, 600, 3, S, S]`` uint8.

    Classes (ImageNet ids such as ``n01532829``) are sorted by name; the images of a class keep
    the order of the CSV rows, of the pickle's index list, or of the file names. Images are
    converted to RGB and resized to ``image_size`` with a LANCZOS filter.

    ``root`` is the folder holding one of the three forms (see the module docstring), or a
    folder whose ``miniimagenet/`` subfolder does; without it ``METAGRAD_DATA`` is used, else
    ``~/.cache/metagrad``. The decoded images are cached as
    ``miniimagenet-<S>px-<fingerprint>.npz`` in ``cache_dir``, else next to the data or, if that
    is read-only, in ``~/.cache/metagrad``.

    ``expected_classes`` (per split) and ``expected_examples`` (per class) are the counts of the
    release; ``None`` accepts a partial copy, but every class of a split must still have the
    same number of images. Pickles can run code when loaded: only use files you trust.
    """
    return prepare_miniimagenet(
        root,
        image_size=image_size,
        cache_dir=cache_dir,
        expected_classes=expected_classes,
        expected_examples=expected_examples,
    ).splits
