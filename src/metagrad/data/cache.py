"""Decoded datasets cached as uint8 ``.npz`` files named by a fingerprint of their source.

A loader decodes its images once per image size and writes them here; later loads read the
file back in well under a second. The fingerprint covers the source files' names, sizes and
modification times, so a changed source gets a new file name and is decoded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from metagrad.data.class_images import ClassImages
from metagrad.errors import DatasetError

Parts = dict[str, ClassImages]


@dataclass(frozen=True)
class Prepared:
    """The classes of each split of a dataset, and the file they are cached in."""

    splits: Parts
    cache_file: Path | None
    """``None`` when no folder was writable and nothing was cached."""


def fallback_dir() -> Path:
    """Where caches go when the data folder is read-only."""
    return Path.home() / ".cache" / "metagrad"


def _cache_folders(data_folder: Path, cache_dir: str | Path | None) -> list[Path]:
    """``cache_dir`` if given, else the data folder and then :func:`fallback_dir`."""
    return [Path(cache_dir)] if cache_dir is not None else [data_folder, fallback_dir()]


def fingerprint(*key: object) -> str:
    """A short hex digest of a JSON-serialisable key (format version, image size, sources)."""
    return hashlib.sha256(json.dumps(list(key)).encode()).hexdigest()[:16]


def files_digest(files: Iterable[Path], base: Path) -> str:
    """A digest of the files' names relative to ``base``, sizes and modification times."""
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(base)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _key(part: str, field: str) -> str:
    """The array name of a part's field; an unnamed part ("") uses the bare field name."""
    return f"{part}.{field}" if part else field


def read_cache(path: Path, what: str) -> Parts | None:
    """The parts stored in ``path``; ``None``, with a warning if the file is damaged, when there
    is no readable cache."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            names = [key[: -len("images")].rstrip(".") for key in data if key.endswith("images")]
            return {
                part: ClassImages(
                    torch.from_numpy(data[_key(part, "images")]),
                    tuple(data[_key(part, "class_names")].tolist()),
                )
                for part in names
            }
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, DatasetError) as exc:
        warnings.warn(
            f"Ignoring the unreadable {what} cache {path} ({exc}); decoding the images again.",
            stacklevel=4,
        )
        return None


def _write_cache(path: Path, parts: Parts) -> None:
    """Write the cache under a temporary name and rename it, so readers never see half a file."""
    arrays = {}
    for part, images in parts.items():
        arrays[_key(part, "images")] = images.images.numpy()
        arrays[_key(part, "class_names")] = np.array(images.class_names, dtype=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _writable(folder: Path) -> bool:
    """Writable by this process and not marked read-only (root ignores the mode bits)."""
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


def store_cache(
    parts: Parts, file_name: str, folders: list[Path], what: str, *, required: bool
) -> Path | None:
    """Cache in the first writable folder and return the file; warn, or raise if ``required``,
    when none is writable."""
    errors = []
    for folder in folders:
        if folder.exists() and not _writable(folder):
            errors.append(f"{folder}: read-only")
            continue
        try:
            _write_cache(folder / file_name, parts)
            return folder / file_name
        except OSError as exc:
            errors.append(f"{folder}: {exc}")
    if required:
        raise DatasetError(
            f"Cannot write the {what} cache ({'; '.join(errors)}). Choose a writable "
            "cache_dir, or leave it unset to cache next to the data or in ~/.cache/metagrad."
        )
    warnings.warn(
        f"Could not cache the decoded {what} images ({'; '.join(errors)}); the next load will "
        "decode them again. Pass a writable cache_dir to avoid that.",
        stacklevel=4,
    )
    return None


def load_or_decode(
    file_name: str,
    data_folder: Path,
    cache_dir: str | Path | None,
    what: str,
    decode: Callable[[], Parts],
    *,
    fits: Callable[[Parts], bool],
) -> Prepared:
    """The parts cached as ``file_name`` (in ``cache_dir``, else next to the data or in
    :func:`fallback_dir`), else ``decode()``-d and cached there; an explicit ``cache_dir`` that
    cannot be written is an error, the default folders only a warning.

    A cache that does not ``fit`` the request (other parts, shapes or class counts) is ignored,
    so decoding runs again and reports what is wrong with the source.
    """
    folders = _cache_folders(data_folder, cache_dir)
    for folder in folders:
        cached = read_cache(folder / file_name, what)
        if cached is not None and fits(cached):
            return Prepared(cached, folder / file_name)
    parts = decode()
    required = cache_dir is not None
    return Prepared(parts, store_cache(parts, file_name, folders, what, required=required))
