"""mini-ImageNet in its three forms, built small in tmp_path: 3/2/2 classes of 4 images, 8x8."""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metagrad.data import ClassImages, load_miniimagenet, miniimagenet
from metagrad.errors import ConfigError, DatasetError

CLASSES = {
    "train": ["n01000001", "n01000002", "n01000003"],
    "val": ["n02000001", "n02000002"],
    "test": ["n03000001", "n03000002"],
}
COUNTS = {split: len(names) for split, names in CLASSES.items()}
EXAMPLES = 4
SIZE = 8


def pixels(split: str, c: int, e: int) -> np.ndarray:
    """A unique [8, 8, 3] noise image per (split, class, example)."""
    seed = ["train", "val", "test"].index(split) * 100 + c * 10 + e
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def encoded(array: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format)
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    """What a lossy JPEG decodes to: the reference for pixels read from JPEG files."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def write_csv_form(root: Path) -> Path:
    """train.csv, val.csv, test.csv and images/ with JPEG files, as Ravi & Larochelle's."""
    (root / "images").mkdir(parents=True)
    for split, names in CLASSES.items():
        rows = ["filename,label"]
        for c, name in enumerate(names):
            for e in range(EXAMPLES):
                filename = f"{name}{e:08d}.jpg"
                (root / "images" / filename).write_bytes(encoded(pixels(split, c, e), "JPEG"))
                rows.append(f"{filename},{name}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def pickle_content(split: str) -> dict[str, object]:
    """Examples of a class interleaved with the others', so class_dict order matters."""
    images, class_dict = [], {}
    for e in range(EXAMPLES):
        for c, name in enumerate(CLASSES[split]):
            class_dict.setdefault(name, []).append(len(images))
            images.append(pixels(split, c, e))
    return {"image_data": np.stack(images), "class_dict": class_dict}


def write_pickle_form(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split in CLASSES:
        path = root / f"mini-imagenet-cache-{split}.pkl"
        path.write_bytes(pickle.dumps(pickle_content(split)))
    return root


def write_folder_form(root: Path) -> Path:
    """train/<class>/*.png etc.: lossless, so pixels can be compared exactly."""
    for split, names in CLASSES.items():
        for c, name in enumerate(names):
            (root / split / name).mkdir(parents=True)
            for e in range(EXAMPLES):
                (root / split / name / f"{e:02d}.png").write_bytes(
                    encoded(pixels(split, c, e), "PNG")
                )
    return root


def load(root: Path | None, **kwargs: object) -> dict[str, ClassImages]:
    """The look-alike has 3/2/2 classes of 4 images, not 64/16/20 of 600."""
    kwargs.setdefault("expected_classes", COUNTS)
    kwargs.setdefault("expected_examples", EXAMPLES)
    kwargs.setdefault("image_size", SIZE)
    return load_miniimagenet(root, **kwargs)


def no_decoding(*args: object) -> None:
    raise AssertionError("the images were decoded again instead of read from the cache")


def assert_shapes(splits: dict[str, ClassImages], size: int = SIZE) -> None:
    assert list(splits) == ["train", "val", "test"]
    for split, images in splits.items():
        assert images.images.shape == (COUNTS[split], EXAMPLES, 3, size, size)
        assert images.images.dtype == torch.uint8
        assert images.class_names == tuple(CLASSES[split])


# -- the three forms -----------------------------------------------------------------------------


def test_csv_form_decodes_the_jpegs(tmp_path: Path) -> None:
    root = write_csv_form(tmp_path / "csv")
    splits = load(root)
    assert_shapes(splits)
    jpeg = (root / "images" / f"{CLASSES['val'][1]}{3:08d}.jpg").read_bytes()
    expected = decoded(jpeg).transpose(2, 0, 1)
    np.testing.assert_array_equal(splits["val"].images[1, 3].numpy(), expected)


def test_pickle_form_keeps_class_dict_order_and_pixels(tmp_path: Path) -> None:
    splits = load(write_pickle_form(tmp_path / "pkl"))
    assert_shapes(splits)
    for split, names in CLASSES.items():
        for c in range(len(names)):
            for e in range(EXAMPLES):
                expected = pixels(split, c, e).transpose(2, 0, 1)
                np.testing.assert_array_equal(splits[split].images[c, e].numpy(), expected)


def test_folder_form_equals_pickle_form(tmp_path: Path) -> None:
    from_folders = load(write_folder_form(tmp_path / "folders"))
    from_pickles = load(write_pickle_form(tmp_path / "pkl"))
    for split in CLASSES:
        assert torch.equal(from_folders[split].images, from_pickles[split].images)
        assert from_folders[split].class_names == from_pickles[split].class_names


def test_resize_is_lanczos_on_rgb(tmp_path: Path) -> None:
    splits = load(write_pickle_form(tmp_path / "pkl"), image_size=5)
    assert_shapes(splits, size=5)
    image = Image.fromarray(pixels("train", 2, 1)).resize((5, 5), Image.Resampling.LANCZOS)
    expected = np.asarray(image).transpose(2, 0, 1)
    np.testing.assert_array_equal(splits["train"].images[2, 1].numpy(), expected)


def test_pickle_with_byte_string_keys(tmp_path: Path) -> None:
    root = write_pickle_form(tmp_path / "pkl")
    content = pickle_content("test")
    as_bytes = {
        b"image_data": content["image_data"],
        b"class_dict": {name.encode(): v for name, v in content["class_dict"].items()},
    }
    (root / "mini-imagenet-cache-test.pkl").write_bytes(pickle.dumps(as_bytes))
    assert load(root)["test"].class_names == tuple(CLASSES["test"])


def test_grey_images_become_rgb(tmp_path: Path) -> None:
    root = write_folder_form(tmp_path / "folders")
    grey = np.full((SIZE, SIZE), 77, dtype=np.uint8)
    (root / "test" / CLASSES["test"][0] / "00.png").write_bytes(encoded(grey, "PNG"))
    assert (load(root)["test"].images[0, 0] == 77).all()


# -- where the data and the cache are found ------------------------------------------------------


def test_metagrad_data_with_miniimagenet_subfolder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pickle_form(tmp_path / "datasets" / "miniimagenet")
    monkeypatch.setenv("METAGRAD_DATA", str(tmp_path / "datasets"))
    assert_shapes(load(None))
    assert list((tmp_path / "datasets" / "miniimagenet").glob("miniimagenet-8px-*.npz"))


def test_cache_is_written_once_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_csv_form(tmp_path / "csv")
    first = load(root)
    assert len(list(root.glob("miniimagenet-8px-*.npz"))) == 1
    assert not list(root.glob("*.tmp"))
    monkeypatch.setattr(miniimagenet, "stack_classes", no_decoding)
    second = load(root)
    for split in CLASSES:
        assert torch.equal(first[split].images, second[split].images)
        assert first[split].class_names == second[split].class_names


def test_prepare_names_the_cache_file(tmp_path: Path) -> None:
    root = write_pickle_form(tmp_path / "pkl")
    cache = tmp_path / "cache"
    prepared = miniimagenet.prepare_miniimagenet(
        root, image_size=SIZE, cache_dir=cache, expected_classes=COUNTS, expected_examples=4
    )
    assert prepared.cache_file is not None and prepared.cache_file.parent == cache
    assert prepared.cache_file.is_file()


def test_changed_source_is_decoded_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_folder_form(tmp_path / "folders")
    load(root)
    (root / "val" / CLASSES["val"][0] / "00.png").write_bytes(encoded(pixels("test", 0, 0), "PNG"))
    monkeypatch.setattr(miniimagenet, "stack_classes", no_decoding)
    with pytest.raises(AssertionError, match="decoded again"):
        load(root)


# -- errors --------------------------------------------------------------------------------------


def test_nothing_found_lists_every_form(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError) as caught:
        load(empty)
    message = str(caught.value)
    for part in (
        str(empty),
        str(empty / "miniimagenet"),
        "train.csv, val.csv and test.csv",
        "images/",
        "mini-imagenet-cache-train.pkl",
        "mini-imagenet-cache-test.pkl",
        "train/, val/ and test/",
        "no checksum-verified public download",
        "--data-root",
        "METAGRAD_DATA",
    ):
        assert part in message


def test_missing_split_file(tmp_path: Path) -> None:
    root = write_csv_form(tmp_path / "csv")
    (root / "test.csv").unlink()
    with pytest.raises(
        DatasetError, match=re.escape("incomplete: found train.csv, val.csv, images/ but not")
    ):
        load(root)
    with pytest.raises(DatasetError, match=re.escape("not test.csv")):
        load(root)


def test_missing_image_file_is_named(tmp_path: Path) -> None:
    root = write_csv_form(tmp_path / "csv")
    missing = root / "images" / f"{CLASSES['train'][0]}{2:08d}.jpg"
    missing.unlink()
    with pytest.raises(DatasetError, match=re.escape(str(missing))):
        load(root)


def test_wrong_shape_in_pickle(tmp_path: Path) -> None:
    root = write_pickle_form(tmp_path / "pkl")
    path = root / "mini-imagenet-cache-val.pkl"
    content = pickle_content("val")
    content["image_data"] = content["image_data"][..., 0]
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(DatasetError, match=re.escape(str(path))) as caught:
        load(root)
    assert "shape [8, 8, 8]" in str(caught.value) and "[N, H, W, 3]" in str(caught.value)


def test_pickle_indices_out_of_range(tmp_path: Path) -> None:
    root = write_pickle_form(tmp_path / "pkl")
    content = pickle_content("val")
    content["class_dict"][CLASSES["val"][1]][-1] = 99
    (root / "mini-imagenet-cache-val.pkl").write_bytes(pickle.dumps(content))
    with pytest.raises(DatasetError, match="not a list of indices into the 8 images"):
        load(root)


def test_not_a_pickle(tmp_path: Path) -> None:
    root = write_pickle_form(tmp_path / "pkl")
    (root / "mini-imagenet-cache-train.pkl").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"Cannot unpickle .*mini-imagenet-cache-train\.pkl"):
        load(root)


def test_class_with_too_few_images_is_named(tmp_path: Path) -> None:
    root = write_csv_form(tmp_path / "csv")
    rows = (root / "train.csv").read_text().splitlines()
    (root / "train.csv").write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(
        DatasetError, match=f"Class {CLASSES['train'][2]} .* has 3 images, expected 4"
    ):
        load(root)
    with pytest.raises(DatasetError, match="has 3 images, the first has 4"):
        load(root, expected_examples=None)


def test_official_counts_are_the_default(tmp_path: Path) -> None:
    root = write_pickle_form(tmp_path / "pkl")
    with pytest.raises(
        DatasetError, match=r"Found 3 classes in the mini-ImageNet train split .*, expected 64"
    ) as caught:
        load_miniimagenet(root, image_size=SIZE)
    assert "expected_classes=None" in str(caught.value)
    with pytest.raises(DatasetError, match="has 4 images, expected 600"):
        load_miniimagenet(root, image_size=SIZE, expected_classes=COUNTS)


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    root = write_folder_form(tmp_path / "folders")
    bad = root / "test" / CLASSES["test"][1] / "02.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=f"Cannot decode the image {re.escape(str(bad))}"):
        load(root)


def test_bad_csv_header(tmp_path: Path) -> None:
    root = write_csv_form(tmp_path / "csv")
    text = (root / "val.csv").read_text().replace("filename,label", "file,class")
    (root / "val.csv").write_text(text)
    with pytest.raises(DatasetError, match="expected the header filename,label"):
        load(root)


def test_class_in_two_splits(tmp_path: Path) -> None:
    root = write_folder_form(tmp_path / "folders")
    (root / "test" / CLASSES["test"][0]).rename(root / "test" / CLASSES["val"][0])
    with pytest.raises(DatasetError, match="in both the val and the test split"):
        load(root)


def test_invalid_image_size(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="image_size"):
        load(write_pickle_form(tmp_path / "pkl"), image_size=0)
