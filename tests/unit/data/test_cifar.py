"""CIFAR-FS and FC100 from a small archive in the CIFAR-100 python format, and their fixed splits.

The look-alike has the 100 real class names with 4 images each (3 training, 1 test) instead of
600, so that the real splits apply to it.
"""

from __future__ import annotations

import io
import pickle
import re
import tarfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from metagrad import build
from metagrad.config import load_config
from metagrad.data import cifar, cifar_splits, load_cifar_fs, load_fc100, natural
from metagrad.data.integrity import md5_of
from metagrad.errors import ConfigError, DatasetError

ALL = sorted(name for part in cifar_splits("cifarfs").values() for name in part)
FINE = sorted(name.split("/")[1] for name in ALL)
COARSE = sorted({name.split("/")[0] for name in ALL})
SUPERCLASS = {name.split("/")[1]: name.split("/")[0] for name in ALL}
TRAIN, TEST = 3, 1
EXAMPLES = TRAIN + TEST


def pixels(label: int, example: int) -> np.ndarray:
    """Image ``example`` of fine label ``label`` as the archive stores it: one row of 3072."""
    return np.random.default_rng(label * 10 + example).integers(0, 256, 3072, dtype=np.uint8)


def batch(examples: range, drop: int | None = None) -> dict[bytes, Any]:
    """A ``train`` or ``test`` batch with the classes interleaved; ``drop`` leaves one image of
    that label out."""
    pairs = [(label, e) for e in examples for label in range(len(FINE))]
    if drop is not None:
        pairs.remove((drop, examples[0]))
    return {
        b"batch_label": b"look-alike",
        b"fine_labels": [label for label, _ in pairs],
        b"coarse_labels": [COARSE.index(SUPERCLASS[FINE[label]]) for label, _ in pairs],
        b"data": np.stack([pixels(label, e) for label, e in pairs]),
    }


def members(**changes: Any) -> dict[str, bytes]:
    """The pickles of ``cifar-100-python/``, as Python 3 writes them with byte-string keys."""
    content = {
        "meta": {
            b"fine_label_names": [name.encode() for name in FINE],
            b"coarse_label_names": [name.encode() for name in COARSE],
        },
        "train": batch(range(TRAIN), changes.pop("drop", None)),
        "test": batch(range(TRAIN, EXAMPLES)),
    }
    for member, value in changes.items():
        content[member].update(value)
    return {member: pickle.dumps(value) for member, value in content.items()}


def write_archive(path: Path, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for member, data in files.items():
            info = tarfile.TarInfo(f"cifar-100-python/{member}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the look-alike cifar-100-python.tar.gz, shared by the module's tests."""
    return write_archive(tmp_path_factory.mktemp("cifar") / cifar.ARCHIVE, members()).parent


@pytest.fixture
def root(tmp_path: Path, official: Path) -> Path:
    """A fresh copy of the look-alike archive, for tests that write a cache or change it."""
    copy = tmp_path / "data" / cifar.ARCHIVE
    copy.parent.mkdir()
    copy.write_bytes((official / cifar.ARCHIVE).read_bytes())
    return copy.parent


def no_decoding(*args: object) -> None:
    raise AssertionError("the images were decoded again instead of read from the cache")


# -- the fixed splits ----------------------------------------------------------------------------


def test_cifar_fs_split_sizes_and_disjointness() -> None:
    splits = cifar_splits("cifarfs")
    assert {part: len(names) for part, names in splits.items()} == {
        "train": 64,
        "val": 16,
        "test": 20,
    }
    assert len(set().union(*map(set, splits.values()))) == 100
    assert "people/baby" in splits["test"] and "fish/shark" in splits["val"]


def test_fc100_splits_whole_superclasses() -> None:
    splits = cifar_splits("fc100")
    assert {part: len(names) for part, names in splits.items()} == {
        "train": 60,
        "val": 20,
        "test": 20,
    }
    assert sorted(name for names in splits.values() for name in names) == ALL
    superclasses = {part: {n.split("/")[0] for n in names} for part, names in splits.items()}
    assert {part: len(names) for part, names in superclasses.items()} == {
        "train": 12,
        "val": 4,
        "test": 4,
    }
    assert len(set().union(*superclasses.values())) == 20
    assert superclasses["test"] == {"aquatic_mammals", "insects", "medium_mammals", "people"}
    assert superclasses["val"] == {
        "large_carnivores",
        "large_omnivores_and_herbivores",
        "non-insect_invertebrates",
        "small_mammals",
    }


def test_every_superclass_has_five_classes() -> None:
    assert len(FINE) == 100 and len(COARSE) == 20
    assert all(sum(s == coarse for s in SUPERCLASS.values()) == 5 for coarse in COARSE)


def test_unknown_split_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="valid: cifarfs, fc100"):
        cifar_splits("cifar10")


# -- loading -------------------------------------------------------------------------------------


def test_cifar_fs_from_the_archive(official: Path, tmp_path: Path) -> None:
    splits = load_cifar_fs(official, cache_dir=tmp_path / "cache", expected_examples=EXAMPLES)
    for part, names in cifar_splits("cifarfs").items():
        assert splits[part].images.shape == (len(names), EXAMPLES, 3, 32, 32)
        assert splits[part].images.dtype == torch.uint8
        assert splits[part].class_names == tuple(names)
    position = cifar_splits("cifarfs")["val"].index("fish/shark")
    label = FINE.index("shark")
    for e in range(EXAMPLES):
        expected = pixels(label, e).reshape(3, 32, 32)
        np.testing.assert_array_equal(splits["val"].images[position, e].numpy(), expected)


def test_fc100_from_the_archive(official: Path, tmp_path: Path) -> None:
    splits = load_fc100(official, cache_dir=tmp_path / "cache", expected_examples=EXAMPLES)
    assert {part: len(images) for part, images in splits.items()} == {
        "train": 60,
        "val": 20,
        "test": 20,
    }
    assert splits["test"].class_names == tuple(cifar_splits("fc100")["test"])


def test_extracted_folder_equals_archive(official: Path, tmp_path: Path) -> None:
    folder = tmp_path / "extracted" / cifar.FOLDER
    folder.mkdir(parents=True)
    for member, data in members().items():
        (folder / member).write_bytes(data)
    from_folder = load_cifar_fs(folder.parent, expected_examples=EXAMPLES)
    from_archive = load_cifar_fs(official, cache_dir=tmp_path / "cache", expected_examples=4)
    for part in from_folder:
        assert torch.equal(from_folder[part].images, from_archive[part].images)


def test_resize_is_lanczos_on_rgb(official: Path, tmp_path: Path) -> None:
    splits = load_fc100(
        official, image_size=16, cache_dir=tmp_path / "cache", expected_examples=EXAMPLES
    )
    assert splits["train"].images.shape == (60, EXAMPLES, 3, 16, 16)
    name = splits["train"].class_names[7]
    image = Image.fromarray(
        pixels(FINE.index(name.split("/")[1]), 2).reshape(3, 32, 32).transpose(1, 2, 0)
    )
    expected = np.asarray(image.resize((16, 16), Image.Resampling.LANCZOS)).transpose(2, 0, 1)
    np.testing.assert_array_equal(splits["train"].images[7, 2].numpy(), expected)


def test_one_cache_serves_both_datasets(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_cifar_fs(root, expected_examples=EXAMPLES)
    (cache_file,) = root.glob("cifar100-32px-*.npz")
    monkeypatch.setattr(cifar, "_decode", no_decoding)
    again = load_cifar_fs(root, expected_examples=EXAMPLES)
    assert torch.equal(again["test"].images, first["test"].images)
    prepared = cifar.prepare_cifar("fc100", root, expected_examples=EXAMPLES)
    assert prepared.cache_file == cache_file
    assert len(prepared.splits["val"]) == 20


def test_summary_names_classes_images_and_cache(root: Path) -> None:
    prepared = cifar.prepare_cifar("cifarfs", root, expected_examples=EXAMPLES)
    text = natural.summary("cifarfs", prepared)
    assert "CIFAR-FS: images 3x32x32 uint8" in text
    assert str(prepared.cache_file) in text
    assert "train: 64 classes x 4 images" in text and "test: 20 classes x 4 images" in text


# -- download ------------------------------------------------------------------------------------


def test_download_with_matching_checksum(
    official: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = official / cifar.ARCHIVE
    monkeypatch.setattr(cifar, "OFFICIAL_URL", archive.as_uri())
    monkeypatch.setattr(cifar, "OFFICIAL_MD5", md5_of(archive))
    fresh = tmp_path / "fresh"
    splits = load_fc100(fresh, download=True, expected_examples=EXAMPLES)
    assert len(splits["train"]) == 60
    assert (fresh / cifar.ARCHIVE).read_bytes() == archive.read_bytes()


def test_download_with_wrong_checksum_leaves_nothing(
    official: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cifar, "OFFICIAL_URL", (official / cifar.ARCHIVE).as_uri())
    monkeypatch.setattr(cifar, "OFFICIAL_MD5", "0" * 32)
    fresh = tmp_path / "fresh"
    with pytest.raises(DatasetError, match="Checksum mismatch"):
        load_cifar_fs(fresh, download=True, expected_examples=EXAMPLES)
    assert not list(fresh.iterdir())


def test_download_goes_to_the_cifar100_subfolder_of_metagrad_data(
    official: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = official / cifar.ARCHIVE
    monkeypatch.setattr(cifar, "OFFICIAL_URL", archive.as_uri())
    monkeypatch.setattr(cifar, "OFFICIAL_MD5", md5_of(archive))
    monkeypatch.setenv("METAGRAD_DATA", str(tmp_path / "datasets"))
    load_cifar_fs(download=True, expected_examples=EXAMPLES)
    assert (tmp_path / "datasets" / "cifar100" / cifar.ARCHIVE).is_file()


# -- errors --------------------------------------------------------------------------------------


def test_nothing_found_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as caught:
        load_cifar_fs(tmp_path / "empty")
    message = str(caught.value)
    for part in (
        cifar.ARCHIVE,
        "cifar-100-python/",
        "--download",
        cifar.OFFICIAL_URL,
        "--data-root",
    ):
        assert part in message


def test_truncated_archive(root: Path) -> None:
    archive = root / cifar.ARCHIVE
    archive.write_bytes(archive.read_bytes()[:5000])
    with pytest.raises(DatasetError, match=re.escape("not a readable .tar.gz archive")) as caught:
        load_cifar_fs(root, expected_examples=EXAMPLES)
    assert str(archive) in str(caught.value) and "download the archive again" in str(caught.value)


def test_not_an_archive(root: Path) -> None:
    (root / cifar.ARCHIVE).write_bytes(b"not an archive")
    with pytest.raises(DatasetError, match=re.escape("not a readable .tar.gz archive")):
        load_cifar_fs(root, expected_examples=EXAMPLES)


def test_missing_member(tmp_path: Path) -> None:
    files = members()
    del files["meta"]
    write_archive(tmp_path / "data" / cifar.ARCHIVE, files)
    with pytest.raises(DatasetError, match="has no member cifar-100-python/meta"):
        load_cifar_fs(tmp_path / "data", expected_examples=EXAMPLES)


def test_link_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data" / cifar.ARCHIVE
    path.parent.mkdir()
    files = members()
    with tarfile.open(path, "w:gz") as archive:  # train is a link out of the folder
        for member, data in (("meta", files["meta"]), ("test", files["test"])):
            info = tarfile.TarInfo(f"cifar-100-python/{member}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("cifar-100-python/train")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        archive.addfile(link)
    with pytest.raises(DatasetError, match=r"cifar-100-python/train in .* is not a regular file"):
        load_cifar_fs(tmp_path / "data", expected_examples=EXAMPLES)


def test_wrong_shape_in_pickle(tmp_path: Path) -> None:
    files = members(test={b"data": np.zeros((100, 3071), dtype=np.uint8)})
    write_archive(tmp_path / "data" / cifar.ARCHIVE, files)
    with pytest.raises(DatasetError, match=re.escape("shape [100, 3071]")) as caught:
        load_cifar_fs(tmp_path / "data", expected_examples=EXAMPLES)
    assert "cifar-100-python/test" in str(caught.value) and "[N, 3072]" in str(caught.value)


def test_labels_out_of_range(tmp_path: Path) -> None:
    files = members(test={b"fine_labels": [100] * 100})
    write_archive(tmp_path / "data" / cifar.ARCHIVE, files)
    with pytest.raises(DatasetError, match=re.escape("fine_labels in")):
        load_cifar_fs(tmp_path / "data", expected_examples=EXAMPLES)


def test_class_with_too_few_images_is_named(tmp_path: Path) -> None:
    write_archive(tmp_path / "data" / cifar.ARCHIVE, members(drop=FINE.index("tulip")))
    with pytest.raises(DatasetError, match=r"Class flowers/tulip of CIFAR-100 .* has 3 images"):
        load_cifar_fs(tmp_path / "data", expected_examples=EXAMPLES)


def test_official_count_is_the_default(root: Path) -> None:
    with pytest.raises(DatasetError, match="has 4 images, expected 600"):
        natural.prepare("cifarfs", root)


# -- training configuration ----------------------------------------------------------------------


def test_a_cifar_fs_config_builds_rgb_tasks_and_model(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(natural, "prepare_cifar", partial(cifar.prepare_cifar, expected_examples=4))
    build.split_images.cache_clear()
    build._natural_splits.cache_clear()
    overrides = [
        "task.dataset=cifarfs",
        "task.image_size=32",
        f"task.data_root={root}",
        "task.k_shot=1",
        "task.n_query=3",
        "model.pool=max",
    ]
    with pytest.raises(ConfigError, match=r"set task.rotations = \[\] for task.dataset = cifarfs"):
        load_config("maml-omniglot-5w1s", overrides)
    config = load_config("maml-omniglot-5w1s", [*overrides, "task.rotations=[]"])
    try:
        tasks = build.build_tasks(config)
        batch = tasks.sample("train", 0, 2)
        assert batch.x_support.shape == (2, 5, 3, 32, 32)
        logits = build.build_model(config)(batch.x_support[0])
        assert logits.shape == (5, 5)
    finally:
        build.split_images.cache_clear()
        build._natural_splits.cache_clear()
