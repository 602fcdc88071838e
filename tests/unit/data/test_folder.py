"""Image folders built in tmp_path (a few classes of a few 8x8 images) and tensor dicts."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metagrad.data import ClassImages, folder
from metagrad.data.folder import (
    class_images_from_tensors,
    load_image_folder,
    prepare_image_folder,
    seeded_class_split,
    seeded_split,
    splits_from_tensors,
)
from metagrad.errors import ConfigError, DatasetError

SIZE = 8
NAMES = [f"class{c:02d}" for c in range(10)]


def noise(seed: int, colour: bool) -> np.ndarray:
    shape = (SIZE, SIZE, 3) if colour else (SIZE, SIZE)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_class(path: Path, count: int, colour: bool = False, seed: int = 0) -> None:
    path.mkdir(parents=True)
    for e in range(count):
        Image.fromarray(noise(seed * 100 + e, colour)).save(path / f"{e:02d}.png")


def write_flat(root: Path, names: list[str] = NAMES, count: int = 3, colour: bool = False) -> Path:
    for c, name in enumerate(names):
        write_class(root / name, count, colour, seed=c)
    return root


def write_splits(root: Path) -> Path:
    for split, names in {"train": ["a", "b", "c"], "val": ["d", "e"], "test": ["f", "g"]}.items():
        for name in names:
            write_class(root / split / name, 3, seed=ord(name))
    return root


def no_decoding(*args: object) -> None:
    raise AssertionError("the images were decoded again instead of read from the cache")


# -- the seeded split ----------------------------------------------------------------------------


def test_seeded_split_is_a_pure_function_of_names_and_seed() -> None:
    torch.manual_seed(1)
    np.random.seed(1)
    first = seeded_class_split(NAMES, seed=3)
    torch.manual_seed(2)
    np.random.seed(2)
    assert seeded_class_split(reversed(NAMES), seed=3) == first
    assert seeded_class_split(NAMES, seed=4) != first


def test_seeded_split_is_disjoint_covers_all_and_follows_fractions() -> None:
    names = [f"n{i:03d}" for i in range(100)]
    parts = seeded_class_split(names)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [64, 16, 20]
    assert sorted(n for part in parts.values() for n in part) == names
    assert all(part == sorted(part) for part in parts.values())


@pytest.mark.parametrize("count", [3, 4, 5, 7])
def test_seeded_split_gives_every_split_a_class(count: int) -> None:
    parts = seeded_class_split([str(i) for i in range(count)], fractions=(0.8, 0.1, 0.1))
    assert all(parts.values()) and sum(map(len, parts.values())) == count


def test_seeded_split_needs_three_classes() -> None:
    with pytest.raises(DatasetError, match="at least 3 classes, one per split, found 2"):
        seeded_class_split(["a", "b"])


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.5, 0.3, 0.3), (1.0, 0.0, 0.0), "abc"])
def test_bad_fractions(fractions: object) -> None:
    with pytest.raises(ConfigError, match="three positive numbers"):
        seeded_class_split(NAMES, fractions=fractions)


# -- loading folders -----------------------------------------------------------------------------


def test_flat_folder_is_split_by_seed(tmp_path: Path) -> None:
    root = write_flat(tmp_path / "data")
    splits = load_image_folder(root, image_size=SIZE, seed=5)
    assert list(splits) == ["train", "val", "test"]
    expected = seeded_class_split(NAMES, seed=5)
    for split, images in splits.items():
        assert images.class_names == tuple(expected[split])
        assert images.images.shape == (len(expected[split]), 3, 1, SIZE, SIZE)
        assert images.images.dtype == torch.uint8
    c = NAMES.index(splits["val"].class_names[0])
    np.testing.assert_array_equal(splits["val"].images[0, 2, 0].numpy(), noise(c * 100 + 2, False))


def test_split_folders_are_used(tmp_path: Path) -> None:
    splits = load_image_folder(write_splits(tmp_path / "data"), image_size=SIZE)
    assert {s: images.class_names for s, images in splits.items()} == {
        "train": ("a", "b", "c"),
        "val": ("d", "e"),
        "test": ("f", "g"),
    }


def test_split_mode_can_be_forced(tmp_path: Path) -> None:
    root = write_flat(tmp_path / "data", ["train", "val", "test", "other"])
    splits = load_image_folder(root, image_size=SIZE, split="seeded")
    assert sorted(n for images in splits.values() for n in images.class_names) == [
        "other",
        "test",
        "train",
        "val",
    ]
    with pytest.raises(DatasetError, match="unclear whether they are splits or classes"):
        load_image_folder(root, image_size=SIZE)


def test_any_colour_gives_rgb_and_channels_convert(tmp_path: Path) -> None:
    root = write_flat(tmp_path / "data", NAMES[:3])
    write_class(root / "colour", 3, colour=True, seed=9)
    rgb = load_image_folder(root, image_size=SIZE)
    assert {images.images.shape[2] for images in rgb.values()} == {3}
    grey = load_image_folder(root, image_size=SIZE, channels=1)
    assert {images.images.shape[2] for images in grey.values()} == {1}
    expected = np.asarray(Image.fromarray(noise(900, True)).convert("L"))
    where = next(s for s, images in grey.items() if "colour" in images.class_names)
    c = grey[where].class_names.index("colour")
    np.testing.assert_array_equal(grey[where].images[c, 0, 0].numpy(), expected)
    forced = load_image_folder(write_flat(tmp_path / "grey"), image_size=SIZE, channels=3)
    assert forced["train"].images.shape[2] == 3


def test_resize_is_lanczos_and_other_files_are_ignored(tmp_path: Path) -> None:
    root = write_flat(tmp_path / "data", NAMES[:3], count=2, colour=True)
    Image.fromarray(noise(7, True)).save(root / NAMES[0] / "extra.JPEG")
    (root / NAMES[0] / "notes.txt").write_text("not an image")
    (root / NAMES[0] / ".hidden.png").write_bytes(b"junk")
    (root / "README.md").write_text("a file next to the classes")
    splits = load_image_folder(root, image_size=5)
    by_class = {images.class_names[0]: images for images in splits.values()}
    assert [by_class[name].num_examples for name in NAMES[:3]] == [3, 2, 2]
    expected = Image.fromarray(noise(101, True)).resize((5, 5), Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(
        by_class[NAMES[1]].images[0, 1].numpy(), np.asarray(expected).transpose(2, 0, 1)
    )


def test_uneven_classes_keep_the_first_images_with_a_warning(tmp_path: Path) -> None:
    root = write_splits(tmp_path / "data")
    (root / "train" / "a" / "99.png").write_bytes((root / "train" / "a" / "00.png").read_bytes())
    os.remove(root / "val" / "d" / "02.png")
    with pytest.warns(UserWarning) as caught:
        splits = load_image_folder(root, image_size=SIZE)
    messages = [str(w.message) for w in caught]
    assert any(
        "train split" in m and "Dropped 1 images of 1 classes, e.g. a (4)" in m for m in messages
    )
    assert any("val split" in m and "keeping the first 2" in m for m in messages)
    assert splits["train"].num_examples == 3
    assert splits["val"].num_examples == 2
    assert splits["test"].num_examples == 3


def test_cache_is_hit_then_invalidated_by_a_changed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_flat(tmp_path / "data", NAMES[:4])
    cache = tmp_path / "cache"
    first = prepare_image_folder(root, image_size=SIZE, cache_dir=cache)
    assert first.cache_file is not None and first.cache_file.parent == cache
    with monkeypatch.context() as patched:
        patched.setattr(folder, "_stack", no_decoding)
        second = prepare_image_folder(root, image_size=SIZE, cache_dir=cache)
    assert second.cache_file == first.cache_file
    for split, images in first.splits.items():
        assert torch.equal(images.images, second.splits[split].images)
    Image.fromarray(noise(1234, False)).save(root / NAMES[2] / "01.png")
    third = prepare_image_folder(root, image_size=SIZE, cache_dir=cache)
    assert third.cache_file != first.cache_file


def test_cache_defaults_to_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_flat(tmp_path / "data", NAMES[:3])
    load_image_folder(root, image_size=SIZE)
    assert len(list(root.glob(f"imagefolder-{SIZE}px-*.npz"))) == 1
    monkeypatch.setattr(folder, "_stack", no_decoding)
    load_image_folder(root, image_size=SIZE)
    with pytest.raises(AssertionError, match="decoded again"):
        load_image_folder(root, image_size=SIZE, seed=1)


# -- folder errors -------------------------------------------------------------------------------


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path / 'nope'} does not exist")):
        load_image_folder(tmp_path / "nope", image_size=SIZE)


def test_root_without_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(DatasetError, match=r"has no class folders\. Put the images"):
        load_image_folder(root, image_size=SIZE)
    Image.fromarray(noise(0, False)).save(root / "loose.png")
    with pytest.raises(DatasetError, match=r"no class folders \(it holds 1 images directly\)"):
        load_image_folder(root, image_size=SIZE)


def test_class_with_too_few_images_is_named(tmp_path: Path) -> None:
    root = write_flat(tmp_path / "data", NAMES[:3])
    write_class(root / "tiny", 1)
    (root / "tiny" / "notes.txt").write_text("ignored")
    message = f"Class folder {root / 'tiny'} has 1 images, fewer than min_examples = 2"
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_image_folder(root, image_size=SIZE)
    splits = load_image_folder(root, image_size=SIZE, min_examples=1)
    assert sum(len(images) for images in splits.values()) == 4


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    root = write_flat(tmp_path / "data", NAMES[:3])
    (root / NAMES[1] / "01.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DatasetError, match=re.escape(f"Cannot read the image {root / NAMES[1]}")):
        load_image_folder(root, image_size=SIZE)


def test_missing_split_folder_when_forced(tmp_path: Path) -> None:
    root = write_flat(tmp_path / "data", NAMES[:3])
    with pytest.raises(DatasetError, match="has no test/, train/, val/ folder"):
        load_image_folder(root, image_size=SIZE, split="folders")


def test_split_folder_without_classes(tmp_path: Path) -> None:
    root = write_splits(tmp_path / "data")
    for file in (root / "val" / "d").iterdir():
        file.unlink()
    (root / "val" / "d").rmdir()
    (root / "val" / "e").rename(tmp_path / "moved")
    with pytest.raises(DatasetError, match=re.escape(f"{root / 'val'} has no class folders")):
        load_image_folder(root, image_size=SIZE)


def test_class_in_two_split_folders(tmp_path: Path) -> None:
    root = write_splits(tmp_path / "data")
    write_class(root / "test" / "a", 3)
    with pytest.raises(DatasetError, match=r"Class a of .* is in both the train and the test"):
        load_image_folder(root, image_size=SIZE)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 0}, "image_size must be a positive integer"),
        ({"image_size": SIZE, "channels": 2}, "channels must be 1"),
        ({"image_size": SIZE, "split": "random"}, "split must be one of"),
        ({"image_size": SIZE, "seed": 1.5}, "seed must be an integer"),
        ({"image_size": SIZE, "min_examples": 0}, "min_examples must be a positive integer"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_image_folder(write_flat(tmp_path / "data", NAMES[:3]), **kwargs)


# -- tensors -------------------------------------------------------------------------------------


def test_tensors_uint8_and_float_become_class_images() -> None:
    pixels = torch.randint(0, 256, (4, 1, 5, 5), dtype=torch.uint8)
    images = class_images_from_tensors({0: pixels, 1: pixels.float() / 255, "two": pixels[:, 0]})
    assert images.class_names == ("0", "1", "two")
    assert images.images.shape == (3, 4, 1, 5, 5)
    for c in range(3):
        assert torch.equal(images.images[c], pixels)


def test_tensors_of_different_sizes_keep_the_first() -> None:
    with pytest.warns(UserWarning, match="keeping the first 2 of each"):
        images = class_images_from_tensors(
            {
                "a": torch.zeros(2, 3, 4, 4),
                "b": torch.arange(3).reshape(3, 1, 1, 1).expand(3, 3, 4, 4) / 2,
            }
        )
    assert images.num_examples == 2
    assert images.images[1, :, 0, 0, 0].tolist() == [0, 128]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (torch.zeros(2, 5, 5, 3), r"shape \(2, 5, 5, 3\), expected \[examples, channels"),
        (torch.zeros(2, 5), r"shape \(2, 5\)"),
        (torch.zeros(2, 1, 5, 5, dtype=torch.int64), "dtype torch.int64"),
        (torch.full((2, 1, 5, 5), 2.0), r"outside \[0, 1\]"),
        (torch.full((2, 1, 5, 5), float("nan")), r"outside \[0, 1\]"),
        (np.zeros((2, 1, 5, 5)), "is a ndarray, expected a torch.Tensor"),
        (torch.zeros(1, 1, 5, 5), "has 1 examples, fewer than min_examples = 2"),
        (torch.zeros(2, 1, 6, 6), r"holds \(1, 6, 6\) images"),
    ],
)
def test_bad_tensors(value: object, match: str) -> None:
    with pytest.raises(DatasetError, match=f"Class 'b' .*{match}"):
        class_images_from_tensors({"a": torch.zeros(2, 1, 5, 5), "b": value})


def test_empty_and_duplicate_tensor_classes() -> None:
    with pytest.raises(DatasetError, match="non-empty dict"):
        class_images_from_tensors({})
    with pytest.raises(DatasetError, match="both named '1'"):
        class_images_from_tensors({1: torch.zeros(2, 4, 4), "1": torch.zeros(2, 4, 4)})


def test_splits_from_tensors() -> None:
    def classes(*names: str) -> dict[str, torch.Tensor]:
        return {name: torch.rand(3, 3, 4, 4) for name in names}

    splits = splits_from_tensors(train=classes("a", "b"), val=classes("c"), test=classes("d"))
    assert {s: images.class_names for s, images in splits.items()} == {
        "train": ("a", "b"),
        "val": ("c",),
        "test": ("d",),
    }
    with pytest.raises(DatasetError, match="Class a of the given tensors is in both"):
        splits_from_tensors(train=classes("a"), val=classes("c"), test=classes("a"))
    with pytest.raises(DatasetError, match="images of different shapes"):
        splits_from_tensors(
            train=classes("a"), val={"c": torch.rand(3, 1, 4, 4)}, test=classes("d")
        )


def test_seeded_split_needs_distinct_names() -> None:
    images = ClassImages(torch.zeros(3, 1, 1, 2, 2, dtype=torch.uint8), ("a", "a", "b"))
    with pytest.raises(DatasetError, match="duplicate names"):
        seeded_split(images)


def test_seeded_split_of_tensors_matches_the_class_split() -> None:
    images = class_images_from_tensors({name: torch.rand(2, 4, 4) for name in NAMES})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits = seeded_split(images, seed=2)
    expected = seeded_class_split(NAMES, seed=2)
    for split, part in splits.items():
        assert part.class_names == tuple(expected[split])
        assert torch.equal(part.images[0], images.images[NAMES.index(expected[split][0])])
