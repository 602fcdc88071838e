"""CIFAR-FS (Bertinetto et al., 2019) and FC100 (Oreshkin et al., 2018), both from CIFAR-100.

CIFAR-100 holds 100 classes of 600 colour images of 32x32 pixels (500 training and 100 test
images each), in 20 superclasses of 5 classes. CIFAR-FS splits the classes into 64/16/20 for
meta-training, validation and testing; FC100 splits the superclasses into 12/4/4 (60/20/20
classes), so that test classes share no superclass with training ones. The splits are fixed
data, ``splits/cifar.json``, copied from torchmeta.

Both are built from the official python archive ``cifar-100-python.tar.gz`` (or its extracted
folder ``cifar-100-python/``): its ``train`` and ``test`` pickles are merged, giving 600 images
per class. The archive's members are read where they are, nothing is extracted. All 100
classes are decoded once per image size and cached as an ``.npz`` file shared by both datasets.
"""

from __future__ import annotations

import json
import tarfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from metagrad.data.cache import (
    Parts,
    Prepared,
    files_digest,
    fingerprint,
    load_or_decode,
)
from metagrad.data.class_images import ClassImages
from metagrad.data.classes import equal_counts
from metagrad.data.images import check_image_size, resize_rgb, stack_classes
from metagrad.data.integrity import download as download_file
from metagrad.data.locate import download_folder, search_folders
from metagrad.data.pickles import as_text, describe, text_keys, unpickle
from metagrad.errors import ConfigError, DatasetError

ARCHIVE = "cifar-100-python.tar.gz"
FOLDER = "cifar-100-python"
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
OFFICIAL_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
NUM_EXAMPLES = 600
SOURCE_SIZE = 32
SPLITS = ("train", "val", "test")
DATASET_NAMES = {"cifarfs": "CIFAR-FS", "fc100": "FC100"}

_MEMBERS = ("meta", "train", "test")
_CACHE_VERSION = 1
_FIX = (
    "download the archive again (download=True, or `metagrad data cifarfs --download`) or "
    "extract it again"
)


@dataclass(frozen=True)
class _Source:
    """The CIFAR-100 python release as its archive or as the extracted folder."""

    path: Path

    @property
    def is_archive(self) -> bool:
        return self.path.name == ARCHIVE

    def fingerprint(self) -> str:
        files = [self.path] if self.is_archive else [self.path / name for name in _MEMBERS]
        try:
            return files_digest(files, self.path.parent)
        except OSError as exc:
            raise DatasetError(
                f"Cannot read {exc.filename}: {exc.strerror}. CIFAR-100 in {self.path} is "
                f"incomplete: {_FIX}."
            ) from exc

    def where(self, name: str) -> str:
        """How the member ``name`` is called in messages."""
        return f"{self.path}:{FOLDER}/{name}" if self.is_archive else str(self.path / name)

    def read(self) -> dict[str, bytes]:
        """The ``meta``, ``train`` and ``test`` pickles as bytes."""
        if not self.is_archive:
            return {name: _read_file(self.path / name) for name in _MEMBERS}
        try:
            with tarfile.open(self.path, "r:gz") as archive:
                return {name: _read_member(archive, self.path, name) for name in _MEMBERS}
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise DatasetError(
                f"{self.path} is not a readable .tar.gz archive ({exc}); it is probably truncated "
                f"or corrupt. Delete it and {_FIX}."
            ) from exc


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc}. To fix: {_FIX}.") from exc


def _read_member(archive: tarfile.TarFile, path: Path, name: str) -> bytes:
    """One regular file of the archive; links and other special members are refused."""
    member_name = f"{FOLDER}/{name}"
    try:
        member = archive.getmember(member_name)
    except KeyError:
        raise DatasetError(
            f"{path} has no member {member_name}; it is not the CIFAR-100 python archive. "
            f"To fix: {_FIX}."
        ) from None
    file = archive.extractfile(member) if member.isfile() else None
    if file is None:
        raise DatasetError(
            f"{member_name} in {path} is not a regular file; it is not the CIFAR-100 python "
            f"archive. To fix: {_FIX}."
        )
    with file:
        return file.read()


def _locate(root: str | Path | None, download: bool) -> _Source:
    folders = search_folders(root, "cifar100")
    for folder in folders:
        if (folder / ARCHIVE).is_file():
            return _Source(folder / ARCHIVE)
        if (folder / FOLDER).is_dir():
            return _Source(folder / FOLDER)
    if not download:
        raise DatasetError(
            f"CIFAR-100 not found: looked for {ARCHIVE} (or the extracted folder {FOLDER}/) in "
            f"{' and '.join(map(str, folders))}. To fix: download it with `metagrad data cifarfs "
            f"--download` (download=True), which fetches {OFFICIAL_URL} and checks its MD5, or "
            "put the archive in a folder and pass it with --data-root (root=...) or set "
            "METAGRAD_DATA to it."
        )
    target = download_folder(root, "cifar100") / ARCHIVE
    return _Source(download_file(OFFICIAL_URL, target, md5=OFFICIAL_MD5))


# -- decoding ------------------------------------------------------------------------------------


def _batch(
    data: bytes, where: str, fine_names: list[str], coarse_names: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The images ``[N, 32, 32, 3]``, fine labels and coarse labels of one pickled batch."""
    content = text_keys(unpickle(data, where, _FIX), where, _FIX)
    absent = sorted({"data", "fine_labels", "coarse_labels"} - set(content))
    if absent:
        raise DatasetError(
            f"{where} has no {', '.join(absent)} (its keys: {sorted(map(str, content))}); it is "
            f"not a CIFAR-100 batch. To fix: {_FIX}."
        )
    pixels = content["data"]
    side = SOURCE_SIZE
    if not (
        isinstance(pixels, np.ndarray)
        and pixels.dtype == np.uint8
        and pixels.ndim == 2
        and pixels.shape[1] == 3 * side * side
    ):
        raise DatasetError(
            f"data in {where} is {describe(pixels)}, expected uint8 [N, {3 * side * side}] "
            f"(N images of 3x{side}x{side} pixels, one row each). To fix: {_FIX}."
        )
    labels = []
    for key, names in (("fine_labels", fine_names), ("coarse_labels", coarse_names)):
        values = np.asarray(content[key])
        if (
            values.shape != (len(pixels),)
            or (values.size and values.dtype.kind not in "iu")
            or (values.size and not 0 <= values.min() <= values.max() < len(names))
        ):
            raise DatasetError(
                f"{key} in {where} is {describe(values)}, expected one label in "
                f"[0, {len(names)}) for each of its {len(pixels)} images. To fix: {_FIX}."
            )
        labels.append(values)
    images = pixels.reshape(-1, 3, side, side).transpose(0, 2, 3, 1)
    return images, labels[0], labels[1]


def _names(meta: Any, where: str, key: str) -> list[str]:
    names = meta.get(key)
    if not isinstance(names, (list, tuple)):
        raise DatasetError(
            f"{where} has no list {key} (found {describe(names)}); it is not the CIFAR-100 meta "
            f"file. To fix: {_FIX}."
        )
    return [str(as_text(name)) for name in names]


def _decode(source: _Source, size: int, expected_examples: int | None) -> ClassImages:
    """All classes, named ``superclass/class``, training images first, then test images."""
    raw = source.read()
    where = {name: source.where(name) for name in _MEMBERS}
    meta = text_keys(unpickle(raw["meta"], where["meta"], _FIX), where["meta"], _FIX)
    fine_names = _names(meta, where["meta"], "fine_label_names")
    coarse_names = _names(meta, where["meta"], "coarse_label_names")
    batches = [
        _batch(raw[name], where[name], fine_names, coarse_names) for name in ("train", "test")
    ]
    images, fine, coarse = (np.concatenate(arrays) for arrays in zip(*batches, strict=True))
    groups = {}
    for label, fine_name in enumerate(fine_names):
        positions = np.flatnonzero(fine == label)
        superclasses = {coarse_names[c] for c in coarse[positions].tolist()}
        if len(superclasses) > 1:
            raise DatasetError(
                f"Class {fine_name} of {source.path} has images in the superclasses "
                f"{sorted(superclasses)}; every class belongs to one. To fix: {_FIX}."
            )
        prefix = f"{superclasses.pop()}/" if superclasses else ""
        groups[prefix + fine_name] = positions.tolist()
    equal_counts(groups, expected_examples, f"CIFAR-100 ({source.path})", _FIX)
    return stack_classes(groups, lambda index: resize_rgb(images[index], size), size)


def _all_classes(
    root: str | Path | None,
    download: bool,
    image_size: int,
    cache_dir: str | Path | None,
    expected_examples: int | None,
) -> Prepared:
    check_image_size(image_size, "32 (the original resolution) or 84 (as mini-ImageNet)")
    source = _locate(root, download)
    key = fingerprint(_CACHE_VERSION, image_size, source.fingerprint())

    def fits(parts: Parts) -> bool:
        images = parts.get("")
        return (
            images is not None
            and images.images.shape[2:] == (3, image_size, image_size)
            and expected_examples in (None, images.num_examples)
        )

    return load_or_decode(
        f"cifar100-{image_size}px-{key}.npz",
        source.path.parent,
        cache_dir,
        "CIFAR-100",
        lambda: {"": _decode(source, image_size, expected_examples)},
        fits=fits,
    )


# -- the fixed splits ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _split_asset() -> dict[str, Any]:
    text = resources.files("metagrad.data").joinpath("splits/cifar.json").read_text("utf-8")
    return json.loads(text)


def cifar_splits(name: str) -> dict[str, list[str]]:
    """The ``superclass/class`` names of the ``train``, ``val`` and ``test`` classes of
    ``"cifarfs"`` (64/16/20) or ``"fc100"`` (60/20/20); see ``splits/cifar.json``."""
    splits = _split_asset()["splits"]
    if name not in splits:
        raise ConfigError(f"Unknown CIFAR-100 split {name!r}; valid: {', '.join(sorted(splits))}.")
    return {part: list(splits[name][part]) for part in SPLITS}


def _split(images: ClassImages, name: str) -> dict[str, ClassImages]:
    position = {class_name: index for index, class_name in enumerate(images.class_names)}
    parts = {}
    for part, wanted in cifar_splits(name).items():
        missing = [class_name for class_name in wanted if class_name not in position]
        if missing:
            raise DatasetError(
                f"{len(missing)} classes of the {DATASET_NAMES[name]} {part} split are not in "
                f"this CIFAR-100 copy (e.g. {', '.join(missing[:3])}); it is not the official "
                f"release. To fix: {_FIX}."
            )
        parts[part] = images.subset([position[class_name] for class_name in wanted])
    return parts


def prepare_cifar(
    name: str,
    root: str | Path | None = None,
    *,
    download: bool = False,
    image_size: int = SOURCE_SIZE,
    cache_dir: str | Path | None = None,
    expected_examples: int | None = NUM_EXAMPLES,
) -> Prepared:
    """The splits of ``"cifarfs"`` or ``"fc100"``, with the cache file of the decoded images.

    See :func:`load_cifar_fs` for the arguments."""
    cifar_splits(name)
    prepared = _all_classes(root, download, image_size, cache_dir, expected_examples)
    return Prepared(_split(prepared.splits[""], name), prepared.cache_file)


def load_cifar_fs(
    root: str | Path | None = None,
    *,
    download: bool = False,
    image_size: int = SOURCE_SIZE,
    cache_dir: str | Path | None = None,
    expected_examples: int | None = NUM_EXAMPLES,
) -> dict[str, ClassImages]:
    """CIFAR-FS: ``train``, ``val`` and ``test`` of 64, 16 and 20 classes, ``[C, 600, 3, S, S]``.

    Classes are named ``superclass/class`` and come in the order of ``splits/cifar.json``; the
    500 training images of a class come first, then its 100 test images, in archive order.
    Images keep their 32x32 pixels unless ``image_size`` asks for another size (LANCZOS).

    ``root`` is the folder holding ``cifar-100-python.tar.gz`` (or ``cifar-100-python/``), or
    a folder whose ``cifar100/`` subfolder does; without it ``METAGRAD_DATA`` is used, else
    ``~/.cache/metagrad``. ``download=True`` fetches a missing archive from the official site
    and checks its MD5. The decoded images are cached as ``cifar100-<S>px-<fingerprint>.npz``
    in ``cache_dir``, else next to the data or, if that is read-only, in ``~/.cache/metagrad``.
    ``expected_examples`` is the number of images per class; ``None`` accepts any number, the
    same for every class.
    """
    return prepare_cifar(
        "cifarfs",
        root,
        download=download,
        image_size=image_size,
        cache_dir=cache_dir,
        expected_examples=expected_examples,
    ).splits


def load_fc100(
    root: str | Path | None = None,
    *,
    download: bool = False,
    image_size: int = SOURCE_SIZE,
    cache_dir: str | Path | None = None,
    expected_examples: int | None = NUM_EXAMPLES,
) -> dict[str, ClassImages]:
    """FC100: ``train``, ``val`` and ``test`` of 60, 20 and 20 classes (12, 4 and 4 whole
    superclasses), ``[C, 600, 3, S, S]``; otherwise as :func:`load_cifar_fs`."""
    return prepare_cifar(
        "fc100",
        root,
        download=download,
        image_size=image_size,
        cache_dir=cache_dir,
        expected_examples=expected_examples,
    ).splits
