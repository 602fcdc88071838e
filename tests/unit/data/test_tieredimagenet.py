"""tiered-ImageNet in its common release format, built small in tmp_path: ragged classes of
4 to 6 images of 8x8 pixels, as Python 3 and Python 2 pickles and as ``.npz`` arrays."""

from __future__ import annotations

import io
import pickle
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from metagrad.data import ClassImages, load_tieredimagenet, tieredimagenet
from metagrad.errors import DatasetError

CLASSES = {
    "train": ["n01000001", "n01000002", "n01000003"],
    "val": ["n02000001", "n02000002"],
    "test": ["n03000001", "n03000002"],
}
IMAGES_PER_CLASS = {"train": [5, 4, 6], "val": [4, 5], "test": [6, 4]}
COUNTS = {split: len(names) for split, names in CLASSES.items()}
KEPT = 4  # the smallest class of every split
SIZE = 8


def pixels(split: str, c: int, e: int) -> np.ndarray:
    seed = ["train", "val", "test"].index(split) * 100 + c * 10 + e
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def file_order(split: str) -> list[tuple[int, int]]:
    """(class, example) of every image in file order: the classes interleaved."""
    pairs = [(c, e) for c, count in enumerate(IMAGES_PER_CLASS[split]) for e in range(count)]
    order = np.random.default_rng(7).permutation(len(pairs))
    return [pairs[i] for i in order]


def py2_pickle(value: Any) -> bytes:
    """``value`` pickled as Python 2 does: strings are byte strings (BINSTRING opcodes)."""

    def dump(item: Any) -> bytes:
        if isinstance(item, str):
            item = item.encode()
        if isinstance(item, bytes):
            return b"T" + struct.pack("<i", len(item)) + item
        if isinstance(item, int):
            return b"J" + struct.pack("<i", item)
        if isinstance(item, list):
            return b"](" + b"".join(map(dump, item)) + b"e"
        if isinstance(item, dict):
            return b"}(" + b"".join(dump(k) + dump(v) for k, v in item.items()) + b"u"
        raise TypeError(type(item))

    return b"\x80\x02" + dump(value) + b"."


def labels_content(split: str) -> dict[str, Any]:
    return {
        "label_specific": [c for c, _ in file_order(split)],
        "label_general": [0] * len(file_order(split)),
        "label_specific_str": CLASSES[split],
        "label_general_str": ["category"],
    }


def write_release(root: Path, form: str = "png") -> Path:
    """``{split}_labels.pkl`` with ``{split}_images_png.pkl`` (form "png": Python 3, encoded
    images as uint8 arrays; "py2": Python 2 pickles) or ``{split}_images.npz`` ("npz")."""
    root.mkdir(parents=True, exist_ok=True)
    for split in CLASSES:
        labels = labels_content(split)
        images = [pixels(split, c, e) for c, e in file_order(split)]
        if form == "py2":
            (root / f"{split}_labels.pkl").write_bytes(py2_pickle(labels))
            (root / f"{split}_images_png.pkl").write_bytes(py2_pickle([png(a) for a in images]))
            continue
        labels["label_specific"] = np.array(labels["label_specific"])
        (root / f"{split}_labels.pkl").write_bytes(pickle.dumps(labels))
        if form == "npz":
            np.savez(root / f"{split}_images.npz", images=np.stack(images))
        else:
            encoded = [np.frombuffer(png(a), dtype=np.uint8) for a in images]
            (root / f"{split}_images_png.pkl").write_bytes(pickle.dumps(encoded))
    return root


def load(root: Path | None, **kwargs: Any) -> dict[str, ClassImages]:
    """The look-alike has 3/2/2 classes of 4 to 6 images, not 351/97/160 of 732 or more."""
    kwargs.setdefault("expected_classes", COUNTS)
    kwargs.setdefault("min_examples", 1)
    kwargs.setdefault("image_size", SIZE)
    return load_tieredimagenet(root, **kwargs)


def no_decoding(*args: object) -> None:
    raise AssertionError("the images were decoded again instead of read from the cache")


# -- loading -------------------------------------------------------------------------------------


def test_ragged_classes_keep_their_first_images_in_file_order(tmp_path: Path) -> None:
    splits = load(write_release(tmp_path / "png"))
    assert list(splits) == ["train", "val", "test"]
    for split, images in splits.items():
        assert images.images.shape == (COUNTS[split], KEPT, 3, SIZE, SIZE)
        assert images.images.dtype == torch.uint8
        assert images.class_names == tuple(CLASSES[split])
        for c in range(COUNTS[split]):
            kept = [e for label, e in file_order(split) if label == c][:KEPT]
            for position, e in enumerate(kept):
                expected = pixels(split, c, e).transpose(2, 0, 1)
                np.testing.assert_array_equal(images.images[c, position].numpy(), expected)


@pytest.mark.parametrize("form", ["py2", "npz"])
def test_python2_pickles_and_npz_give_the_same_images(tmp_path: Path, form: str) -> None:
    reference = load(write_release(tmp_path / "png"))
    other = load(write_release(tmp_path / form, form))
    for split in CLASSES:
        assert torch.equal(other[split].images, reference[split].images)
        assert other[split].class_names == reference[split].class_names


def test_python2_images_need_latin1(tmp_path: Path) -> None:
    """The reason for encoding="latin1": Python 3's default cannot read these pickles."""
    root = write_release(tmp_path / "py2", "py2")
    with pytest.raises(UnicodeDecodeError):
        pickle.loads((root / "test_images_png.pkl").read_bytes())


def test_resize_is_lanczos_on_rgb(tmp_path: Path) -> None:
    splits = load(write_release(tmp_path / "npz", "npz"), image_size=5)
    c, e = file_order("val")[0]
    expected = Image.fromarray(pixels("val", c, e)).resize((5, 5), Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(
        splits["val"].images[c, 0].numpy(), np.asarray(expected).transpose(2, 0, 1)
    )


def test_metagrad_data_with_subfolder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_release(tmp_path / "datasets" / "tieredimagenet", "npz")
    monkeypatch.setenv("METAGRAD_DATA", str(tmp_path / "datasets"))
    assert len(load(None)["train"]) == 3


def test_cache_is_written_once_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_release(tmp_path / "png")
    first = load(root)
    assert len(list(root.glob("tieredimagenet-8px-*.npz"))) == 1
    monkeypatch.setattr(tieredimagenet, "stack_classes", no_decoding)
    second = load(root)
    for split in CLASSES:
        assert torch.equal(first[split].images, second[split].images)
        assert first[split].class_names == second[split].class_names


# -- errors --------------------------------------------------------------------------------------


def test_nothing_found_lists_the_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError) as caught:
        load(empty)
    message = str(caught.value)
    for part in (
        str(empty / "tieredimagenet"),
        "{split}_labels.pkl",
        "{split}_images_png.pkl",
        "{split}_images.npz",
        "no checksum-verified public download",
        "--data-root",
    ):
        assert part in message


def test_missing_split_file(tmp_path: Path) -> None:
    root = write_release(tmp_path / "png")
    (root / "val_images_png.pkl").unlink()
    with pytest.raises(
        DatasetError, match=re.escape("incomplete: val_images.npz or val_images_png.pkl")
    ):
        load(root)


def test_wrong_shape_in_npz(tmp_path: Path) -> None:
    root = write_release(tmp_path / "npz", "npz")
    path = root / "test_images.npz"
    np.savez(path, images=np.zeros((10, SIZE, SIZE), dtype=np.uint8))
    with pytest.raises(DatasetError, match=re.escape(f"images in {path} is an array of shape")):
        load(root)


def test_images_and_labels_of_different_lengths(tmp_path: Path) -> None:
    root = write_release(tmp_path / "png")
    path = root / "train_images_png.pkl"
    path.write_bytes(pickle.dumps(pickle.loads(path.read_bytes())[:-1]))
    with pytest.raises(DatasetError, match="expected a list of 15 PNG-encoded images"):
        load(root)


def test_labels_out_of_range(tmp_path: Path) -> None:
    root = write_release(tmp_path / "png")
    labels = labels_content("val")
    labels["label_specific_str"] = labels["label_specific_str"][:1]
    (root / "val_labels.pkl").write_bytes(pickle.dumps(labels))
    with pytest.raises(DatasetError, match="label_specific_str names 1 classes"):
        load(root, expected_classes=None)


def test_class_with_too_few_images_is_named(tmp_path: Path) -> None:
    root = write_release(tmp_path / "png")
    with pytest.raises(
        DatasetError, match=f"Class {CLASSES['train'][1]} .* has 4 images, fewer than min_examples"
    ):
        load(root, min_examples=5)


def test_official_counts_are_the_default(tmp_path: Path) -> None:
    root = write_release(tmp_path / "npz", "npz")
    with pytest.raises(DatasetError, match=r"Found 3 classes .*, expected 351"):
        load_tieredimagenet(root, image_size=SIZE)
    with pytest.raises(DatasetError, match="has 5 images, fewer than min_examples = 600"):
        load_tieredimagenet(root, image_size=SIZE, expected_classes=COUNTS)


def test_corrupt_png_is_named(tmp_path: Path) -> None:
    root = write_release(tmp_path / "py2", "py2")
    path = root / "test_images_png.pkl"
    images = [png(pixels("test", c, e)) for c, e in file_order("test")]
    images[3] = b"not an image"
    path.write_bytes(py2_pickle(images))
    with pytest.raises(DatasetError, match=re.escape(f"Cannot decode the image {path} (image 3)")):
        load(root)


def test_not_a_pickle(tmp_path: Path) -> None:
    root = write_release(tmp_path / "png")
    (root / "test_labels.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DatasetError, match="Cannot unpickle"):
        load(root)
