"""Omniglot (Lake, Salakhutdinov and Tenenbaum, 2015): 1623 handwritten characters, 20 drawings.

The two official archives, ``images_background.zip`` (30 alphabets, 964 characters) and
``images_evaluation.zip`` (20 alphabets, 659 characters), hold 105x105 binary PNGs with a white
background (1) and black strokes (0), laid out as ``<set>/<Alphabet>/characterNN/<ID>_<DD>.png``.

:func:`load_omniglot` decodes them once per image size into a uint8 :class:`ClassImages` with
stroke = 255 and background = 0 (the MAML reference code feeds ``1 - image`` to its network) and
caches the result as an ``.npz`` file, so later loads take well under a second.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from metagrad.data.cache import Parts, files_digest, fingerprint, load_or_decode
from metagrad.data.class_images import ClassImages
from metagrad.data.classes import PARTIAL_COPY
from metagrad.data.integrity import download as download_file
from metagrad.errors import ConfigError, DatasetError

SETS = ("images_background", "images_evaluation")
OFFICIAL_URLS = {
    name: f"https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{name}.zip"
    for name in SETS
}
OFFICIAL_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
NUM_ALPHABETS = {"images_background": 30, "images_evaluation": 20}
NUM_CLASSES = 1623
NUM_DRAWINGS = 20
SOURCE_SIZE = 105
SPLIT_PARTS = ("train", "val", "test")
_DRAWING_NAME = re.compile(r"[0-9]+_(?P<drawer>[0-9]{2})\.png")
"""A drawing's file name: the character's image ID, then the drawer 01-20."""

_CACHE_VERSION = 1
_FIX = (
    "put both in one folder and pass it with --data-root (root=...), or set METAGRAD_DATA to "
    "it, or download the official archives with `metagrad data omniglot --download` "
    "(download=True)"
)
_REFETCH = (
    "download the archive again (download=True, or `metagrad data omniglot --download`) or "
    "extract it again"
)


@dataclass(frozen=True)
class _Source:
    """One image set (background or evaluation) as a zip archive or an extracted folder."""

    set_name: str
    path: Path

    @property
    def is_zip(self) -> bool:
        return self.path.suffix == ".zip"

    def members(self) -> list[str]:
        """Paths ``<set>/<Alphabet>/<character>/<file>.png`` of every drawing in the source."""
        if self.is_zip:
            return [name for name in _zip_names(self.path) if _is_drawing(name, self.set_name)]
        return [
            f"{self.set_name}/{alphabet.name}/{character.name}/{file.name}"
            for alphabet in _subfolders(self.path)
            for character in _subfolders(alphabet)
            for file in sorted(character.iterdir())
            if file.suffix == ".png" and not file.name.startswith(".") and file.is_file()
        ]

    def fingerprint(self) -> list[Any]:
        """Sizes and modification times that change whenever the source's content does."""
        if self.is_zip:
            stat = self.path.stat()
            return [self.set_name, "zip", stat.st_size, stat.st_mtime_ns]
        files = (self.path.parent / member for member in self.members())
        return [self.set_name, "folder", files_digest(files, self.path.parent)]

    def read(self, members: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """Yield ``(where, data)`` for each member, ``where`` naming it for error messages."""
        if self.is_zip:
            with zipfile.ZipFile(self.path) as archive:
                for member in members:
                    where = f"{self.path}:{member}"
                    yield where, _guarded_read(where, lambda m=member: archive.read(m))
        else:
            for member in members:
                file = self.path.parent / member
                yield str(file), _guarded_read(str(file), file.read_bytes)


@dataclass(frozen=True)
class _Character:
    name: str
    source: _Source
    members: tuple[str, ...]


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(
            f"{path} is not a readable zip archive ({exc}); it is probably truncated or "
            f"corrupt. Delete it and {_REFETCH}, or point the loader at a good copy."
        ) from exc


def _is_drawing(member: str, set_name: str) -> bool:
    parts = member.split("/")
    return (
        len(parts) == 4
        and parts[0] == set_name
        and parts[3].endswith(".png")
        and not any(part.startswith(".") for part in parts)
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _guarded_read(where: str, read: Any) -> bytes:
    try:
        return read()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise DatasetError(f"Cannot read {where}: {exc}. The data is corrupt: {_REFETCH}.") from exc


# -- locating the data -------------------------------------------------------------------------


def default_root() -> Path:
    """Where Omniglot is looked for when neither ``root`` nor ``METAGRAD_DATA`` is given."""
    return Path.home() / ".cache" / "metagrad" / "omniglot"


def _search_folders(root: str | Path | None) -> tuple[list[Path], Path]:
    """The folders to look in, and the folder that downloads go to."""
    if root is not None:
        base = Path(root).expanduser()
        return [base, base / "omniglot"], base
    env = os.environ.get("METAGRAD_DATA")
    if env:
        base = Path(env).expanduser()
        return [base, base / "omniglot"], base / "omniglot"
    return [default_root()], default_root()


def _find_sources(folder: Path) -> dict[str, _Source]:
    found = {}
    for set_name in SETS:
        archive, extracted = folder / f"{set_name}.zip", folder / set_name
        if archive.is_file():
            found[set_name] = _Source(set_name, archive)
        elif extracted.is_dir():
            found[set_name] = _Source(set_name, extracted)
    return found


def _locate(root: str | Path | None, download: bool) -> tuple[Path, dict[str, _Source]]:
    """The folder holding the two image sets and its sources, downloading missing archives."""
    folders, download_folder = _search_folders(root)
    found = [(folder, _find_sources(folder)) for folder in folders]
    for folder, sources in found:
        if len(sources) == len(SETS):
            return folder, sources
    folder, sources = next(((f, s) for f, s in found if s), (download_folder, {}))
    if not download:
        raise DatasetError(_not_found_message(found))
    for set_name in SETS:
        if set_name not in sources:
            archive = download_file(
                OFFICIAL_URLS[set_name], folder / f"{set_name}.zip", md5=OFFICIAL_MD5[set_name]
            )
            sources[set_name] = _Source(set_name, archive)
    return folder, {set_name: sources[set_name] for set_name in SETS}


def _absent(sources: dict[str, _Source]) -> list[str]:
    return [set_name for set_name in SETS if set_name not in sources]


def _not_found_message(found: list[tuple[Path, dict[str, _Source]]]) -> str:
    wanted = " and ".join(f"{name}.zip (or the extracted folder {name}/)" for name in SETS)
    where = ", ".join(str(folder) for folder, _ in found)
    partial = [
        f"{folder} has {', '.join(sources)} but not {', '.join(_absent(sources))}"
        for folder, sources in found
        if sources
    ]
    detail = f" ({'; '.join(partial)})" if partial else ""
    return f"Omniglot not found: looked for {wanted} in {where}{detail}. To fix: {_FIX}."


# -- indexing and checking -----------------------------------------------------------------------


def _characters(source: _Source) -> list[_Character]:
    groups: dict[tuple[str, str], list[str]] = {}
    for member in source.members():
        _, alphabet, character, _ = member.split("/")
        groups.setdefault((alphabet, character), []).append(member)
    characters = [
        _Character(f"{alphabet}/{character}", source, tuple(sorted(members)))
        for (alphabet, character), members in sorted(groups.items())
    ]
    for character in characters:
        if len(character.members) != NUM_DRAWINGS:
            raise DatasetError(
                f"Character {source.set_name}/{character.name} in {source.path} has "
                f"{len(character.members)} drawings, expected {NUM_DRAWINGS}. The data is "
                f"incomplete or was modified: {_REFETCH}."
            )
        drawers = [_drawer(member) for member in character.members]
        if drawers != list(range(1, NUM_DRAWINGS + 1)):
            raise DatasetError(
                f"The drawings of character {source.set_name}/{character.name} in {source.path} "
                f"are not named <ID>_<DD>.png with one ID and drawers 01-{NUM_DRAWINGS} "
                f"(found {', '.join(m.rsplit('/', 1)[1] for m in character.members[:3])}, ...): "
                f"the files were renamed, and the drawer of each drawing is lost. To fix: "
                f"{_REFETCH}."
            )
    return characters


def _drawer(member: str) -> int | None:
    """The drawer ``DD`` of a drawing ``<ID>_<DD>.png``, or None for another name."""
    match = _DRAWING_NAME.fullmatch(member.rsplit("/", 1)[1])
    return int(match["drawer"]) if match else None


def _index(sources: dict[str, _Source], expected_classes: int | None) -> list[_Character]:
    characters = [c for source in sources.values() for c in _characters(source)]
    _check_complete(characters, sources, expected_classes)
    return characters


def _check_complete(
    characters: list[_Character], sources: dict[str, _Source], expected_classes: int | None
) -> None:
    counts = Counter(c.name for c in characters)
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        raise DatasetError(
            f"Characters {_preview(duplicates)} appear in both {' and '.join(SETS)} "
            f"(in {', '.join(str(s.path) for s in sources.values())}). Keep each alphabet in "
            f"one set only: {_REFETCH}."
        )
    if expected_classes is None:
        return
    problems = _official_differences(set(counts)) if expected_classes == NUM_CLASSES else []
    if len(characters) == expected_classes and not problems:
        return
    found = "; ".join(
        f"{source.path}: {len({c.name.split('/')[0] for c in characters if c.source == source})}"
        f" alphabets, {sum(c.source == source for c in characters)} characters"
        for source in sources.values()
    )
    expected = f"{expected_classes} characters"
    if expected_classes == NUM_CLASSES:
        expected += " in " + " + ".join(f"{n} {s} alphabets" for s, n in NUM_ALPHABETS.items())
    raise DatasetError(
        f"Omniglot is incomplete: found {len(characters)} characters ({found}), expected "
        f"{expected}. {' '.join(problems)} To fix: {_REFETCH}. {PARTIAL_COPY}"
    )


def _official_differences(present: set[str]) -> list[str]:
    official = {name for part in omniglot_splits("maml").values() for name in part}
    missing = official - present
    alphabets_present = {name.split("/")[0] for name in present}
    missing_alphabets = sorted({n.split("/")[0] for n in missing} - alphabets_present)
    missing_characters = sorted(n for n in missing if n.split("/")[0] not in missing_alphabets)
    problems = []
    if missing_alphabets:
        problems.append(f"Missing alphabets: {_preview(missing_alphabets)}.")
    if missing_characters:
        problems.append(f"Missing characters: {_preview(missing_characters)}.")
    if present - official:
        problems.append(f"Characters not in Omniglot: {_preview(sorted(present - official))}.")
    return problems


def _preview(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


# -- decoding ------------------------------------------------------------------------------------


def _decode_png(data: bytes, where: str, size: int) -> np.ndarray:
    """One drawing as a ``[size, size]`` uint8 array with stroke 255 and background 0.

    The binary image is converted to 8-bit grey before resizing: Pillow resizes mode '1'
    images with nearest-neighbour whatever filter is asked for, so LANCZOS antialiasing
    needs grey levels to work on.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            grey = image.convert("L")
    except (OSError, SyntaxError, ValueError, zlib.error) as exc:
        raise DatasetError(
            f"Cannot decode the image {where}: {exc}. The file is corrupt or truncated: {_REFETCH}."
        ) from exc
    if grey.size != (SOURCE_SIZE, SOURCE_SIZE):
        raise DatasetError(
            f"The image {where} is {grey.size[0]}x{grey.size[1]} pixels, expected "
            f"{SOURCE_SIZE}x{SOURCE_SIZE} as in the official release: {_REFETCH}."
        )
    grey = ImageOps.invert(grey)
    if size != SOURCE_SIZE:
        grey = grey.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(grey, dtype=np.uint8)


def _decode_all(characters: list[_Character], size: int) -> np.ndarray:
    images = np.empty((len(characters), NUM_DRAWINGS, 1, size, size), dtype=np.uint8)
    flat = images.reshape(-1, size, size)
    position = 0
    for source, group in itertools.groupby(characters, key=lambda c: c.source):
        members = [member for character in group for member in character.members]
        for where, data in source.read(members):
            flat[position] = _decode_png(data, where, size)
            position += 1
    return images


# -- public API ----------------------------------------------------------------------------------


def omniglot_class_names(
    root: str | Path | None = None,
    *,
    download: bool = False,
    expected_classes: int | None = NUM_CLASSES,
) -> list[str]:
    """The ``"Alphabet/characterNN"`` names in load order, from the listings, without decoding."""
    _, sources = _locate(root, download)
    return [character.name for character in _index(sources, expected_classes)]


def load_omniglot(
    root: str | Path | None = None,
    *,
    download: bool = False,
    image_size: int = 28,
    cache_dir: str | Path | None = None,
    expected_classes: int | None = NUM_CLASSES,
) -> ClassImages:
    """All Omniglot characters as ``ClassImages`` of shape ``[1623, 20, 1, S, S]`` (uint8).

    Classes come background set first, then evaluation set, alphabets and characters sorted;
    drawings are sorted by file name, ``<ID>_<DD>.png`` with one ID per character, so that
    example ``m`` of every character is the drawing of drawer ``m + 1`` (``DD``; the loader
    checks it); names are ``"Alphabet/characterNN"``. Pixels are stroke 255, background 0,
    resized from 105x105 with a LANCZOS filter.

    ``root`` is the folder holding ``images_background.zip`` and ``images_evaluation.zip`` (or
    the extracted ``images_background/`` and ``images_evaluation/``), or a folder whose
    ``omniglot/`` subfolder holds them. Without ``root``, the ``METAGRAD_DATA`` folder (or its
    ``omniglot/`` subfolder) is used, else ``~/.cache/metagrad/omniglot``. ``download=True``
    fetches missing archives from the official repository and checks their MD5; local archives
    and folders are used as they are.

    The decoded images are cached as ``omniglot-<S>px-<fingerprint>.npz`` in ``cache_dir``, or
    in the data folder and, if that is read-only, in ``~/.cache/metagrad``. The fingerprint
    covers the sources' sizes and modification times, so a changed source is decoded again.

    ``expected_classes`` is the number of characters the data must hold; ``None`` accepts a
    partial copy.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(
            f"image_size must be a positive integer number of pixels, got {image_size!r}; "
            "use e.g. 28 (the MAML setting) or 105 (the original resolution)."
        )
    folder, sources = _locate(root, download)
    key = fingerprint(_CACHE_VERSION, image_size, [s.fingerprint() for s in sources.values()])

    def fits(parts: Parts) -> bool:
        images = parts.get("")
        return (
            images is not None
            and images.images.shape[1:] == (NUM_DRAWINGS, 1, image_size, image_size)
            and expected_classes in (None, len(images))
        )

    def decode() -> Parts:
        characters = _index(sources, expected_classes)
        images = torch.from_numpy(_decode_all(characters, image_size))
        return {"": ClassImages(images, tuple(character.name for character in characters))}

    prepared = load_or_decode(
        f"omniglot-{image_size}px-{key}.npz",
        folder,
        cache_dir,
        "Omniglot",
        decode,
        fits=fits,
    )
    return prepared.splits[""]


@lru_cache(maxsize=1)
def _split_asset() -> dict[str, Any]:
    text = resources.files("metagrad.data").joinpath("splits/omniglot.json").read_text("utf-8")
    return json.loads(text)


def _split_entry(name: str) -> dict[str, Any]:
    splits = _split_asset()["splits"]
    if name not in splits:
        raise ConfigError(
            f"Unknown Omniglot split {name!r}; valid splits: {', '.join(sorted(splits))}."
        )
    return splits[name]


def omniglot_splits(name: str = "maml") -> dict[str, list[str]]:
    """The class names of the ``train``, ``val`` and ``test`` parts of a fixed split.

    ``"maml"``: the split of the MAML reference code (1100/100/423 characters);
    ``"vinyals"``: the alphabet-level split of Vinyals et al. (1028/172/423 characters);
    ``"lake"``: the background and evaluation sets of Lake et al. (964/0/659 characters: no
    validation classes). See ``splits/omniglot.json`` and ``metagrad.data.omniglot_splits_build``
    for how they are made.
    """
    entry = _split_entry(name)
    return {part: list(entry[part]) for part in SPLIT_PARTS}


def omniglot_split_rotations(name: str = "maml") -> dict[str, bool]:
    """Whether each part of a split uses rotated copies (multiples of 90 degrees) by default."""
    return dict(_split_entry(name)["rotations"])


def _base_name(class_name: str) -> str:
    """``"Alphabet/character01/rot090"`` -> ``"Alphabet/character01"``."""
    return "/".join(class_name.split("/")[:2])


def split_classes(images: ClassImages, split_name: str, split: str) -> ClassImages:
    """The classes of ``images`` in one part (``train``/``val``/``test``) of a named split.

    Classes come in the order of the split; rotated copies (``with_rotations``) of a character
    are all kept, next to each other.
    """
    if split not in SPLIT_PARTS:
        raise ConfigError(
            f"Unknown part {split!r} of the Omniglot split {split_name!r}; valid parts: "
            f"{', '.join(SPLIT_PARTS)}."
        )
    wanted = omniglot_splits(split_name)[split]
    positions: dict[str, list[int]] = {}
    for index, class_name in enumerate(images.class_names):
        positions.setdefault(_base_name(class_name), []).append(index)
    missing = [name for name in wanted if name not in positions]
    if missing:
        raise DatasetError(
            f"{len(missing)} of the {len(wanted)} characters of the {split_name!r} {split} "
            f"split are not in these images (e.g. {_preview(missing, 3)}). Split the complete "
            "dataset from load_omniglot() before taking subsets."
        )
    return images.subset([index for name in wanted for index in positions[name]])


def summary(images: ClassImages) -> str:
    """A few lines describing loaded Omniglot images and how the fixed splits divide them."""
    channels, height, width = images.images.shape[2:]
    stroke = images.images.float().mean().item() / 255 if images.images.numel() else 0.0
    lines = [
        f"Omniglot: {len(images)} classes x {images.num_examples} examples, images "
        f"{channels}x{height}x{width} uint8 (stroke 255, background 0), "
        f"{images.images.numel() / 2**20:.1f} MiB, mean stroke fraction {stroke:.3f}"
    ]
    bases = Counter(_base_name(name) for name in images.class_names)
    for name in sorted(_split_asset()["splits"]):
        counts = ", ".join(
            f"{part} {sum(bases[n] for n in names)}"
            for part, names in omniglot_splits(name).items()
        )
        rotated = ", ".join(p for p, used in omniglot_split_rotations(name).items() if used)
        lines.append(f"split {name}: {counts} classes; rotations by default in {rotated or 'none'}")
    return "\n".join(lines)
