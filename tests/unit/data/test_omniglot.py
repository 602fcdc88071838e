"""Omniglot loading, caching, integrity helpers, ClassImages and the fixed class splits.

Most tests run on a small look-alike in the official layout built in tmp_path; the tests at the
end load the real dataset from the shared folder when it is present.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from metagrad.data import ClassImages, load_omniglot, omniglot, omniglot_splits
from metagrad.data.integrity import download, extract_zip, md5_of, sha256_of
from metagrad.data.omniglot import (
    omniglot_class_names,
    omniglot_split_rotations,
    split_classes,
    summary,
)
from metagrad.data.omniglot_splits_build import asset_path, build_asset, render
from metagrad.errors import ConfigError, DatasetError

# set -> alphabet -> number of characters; 8 characters in all, 20 drawings each.
LAYOUT = {
    "images_background": {"Alpha": 2, "Beta": 2, "Gamma": 2},
    "images_evaluation": {"Delta": 2},
}
CLASS_NAMES = [
    f"{alphabet}/character{number:02d}"
    for alphabets in LAYOUT.values()
    for alphabet, count in alphabets.items()
    for number in range(1, count + 1)
]
DRAWINGS = 20


def drawing(class_index: int, drawing_index: int) -> Image.Image:
    """A 105x105 mode-'1' image: white background (1) and a black (0) bar unique to the pair."""
    image = Image.new("1", (105, 105), 1)
    left, top = 5 + 7 * class_index, 5 + 3 * drawing_index
    ImageDraw.Draw(image).rectangle((left, top, left + 29, top + 19), fill=0)
    return image


def expected_pixels(class_index: int, drawing_index: int) -> np.ndarray:
    """What the loader must make of ``drawing`` at 105 px: stroke 255, background 0."""
    return np.where(np.asarray(drawing(class_index, drawing_index)), 0, 255).astype(np.uint8)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def members() -> dict[str, dict[str, bytes]]:
    """set name -> {member path: PNG bytes}, in the official naming scheme."""
    result: dict[str, dict[str, bytes]] = {}
    class_index = 0
    for set_name, alphabets in LAYOUT.items():
        result[set_name] = {}
        for alphabet, count in alphabets.items():
            for number in range(1, count + 1):
                for d in range(DRAWINGS):
                    member = (
                        f"{set_name}/{alphabet}/character{number:02d}/"
                        f"{class_index + 1:04d}_{d + 1:02d}.png"
                    )
                    result[set_name][member] = png_bytes(drawing(class_index, d))
                class_index += 1
    return result


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


def write_folder(root: Path, files: dict[str, bytes]) -> None:
    for member, data in files.items():
        path = root / member
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture
def synthetic_members() -> dict[str, dict[str, bytes]]:
    return members()


@pytest.fixture
def zip_root(tmp_path: Path, synthetic_members: dict[str, dict[str, bytes]]) -> Path:
    """A folder holding images_background.zip and images_evaluation.zip."""
    root = tmp_path / "zips"
    for set_name, files in synthetic_members.items():
        write_zip(root / f"{set_name}.zip", files)
    return root


@pytest.fixture
def folder_root(tmp_path: Path, synthetic_members: dict[str, dict[str, bytes]]) -> Path:
    """A folder holding the extracted images_background/ and images_evaluation/."""
    root = tmp_path / "folders"
    for files in synthetic_members.values():
        write_folder(root, files)
    return root


def load(root: Path, **kwargs: object) -> ClassImages:
    """The synthetic data has 8 characters, not the 1623 of the real release."""
    kwargs.setdefault("expected_classes", len(CLASS_NAMES))
    return load_omniglot(root, **kwargs)


def no_decoding(*args: object) -> None:
    raise AssertionError("the images were decoded again instead of read from the cache")


# -- loading -------------------------------------------------------------------------------------


def test_zips_and_folders_load_to_the_same_tensor(zip_root: Path, folder_root: Path) -> None:
    from_zips = load(zip_root, cache_dir=zip_root / "cache")
    from_folders = load(folder_root, cache_dir=folder_root / "cache")
    assert torch.equal(from_zips.images, from_folders.images)
    assert from_zips.class_names == from_folders.class_names


def test_shape_dtype_and_class_order(zip_root: Path) -> None:
    images = load(zip_root)
    assert images.images.shape == (len(CLASS_NAMES), DRAWINGS, 1, 28, 28)
    assert images.images.dtype == torch.uint8
    assert images.class_names == tuple(CLASS_NAMES)
    assert len(images) == len(CLASS_NAMES)
    assert images.num_examples == DRAWINGS


def test_pixels_are_inverted_and_drawings_sorted(zip_root: Path) -> None:
    images = load(zip_root, image_size=105).images.numpy()
    for c in range(len(CLASS_NAMES)):
        for d in range(DRAWINGS):
            np.testing.assert_array_equal(images[c, d, 0], expected_pixels(c, d))
    assert images[0, 0, 0, 5 + 10, 5 + 15] == 255  # inside the black bar of the PNG
    assert images[0, 0, 0, 100, 100] == 0  # white background


def test_resize_is_lanczos_on_grey_levels(zip_root: Path) -> None:
    images = load(zip_root, image_size=28).images.numpy()
    grey = Image.fromarray(expected_pixels(3, 7)).resize((28, 28), Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(images[3, 7, 0], np.asarray(grey))
    assert ((images > 0) & (images < 255)).any(), "antialiased edges have grey levels"


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_png_in_zip_names_the_member(
    zip_root: Path, synthetic_members: dict[str, dict[str, bytes]], damage: str
) -> None:
    files = synthetic_members["images_evaluation"]
    member = sorted(files)[5]
    files[member] = (
        b"not a png" if damage == "garbage" else files[member][: len(files[member]) // 2]
    )
    write_zip(zip_root / "images_evaluation.zip", files)
    with pytest.raises(DatasetError, match=re.escape(member)) as caught:
        load(zip_root)
    assert "download the archive again" in str(caught.value)


def test_corrupt_png_in_folder_names_the_file(folder_root: Path) -> None:
    file = folder_root / "images_background/Beta/character02/0004_03.png"
    file.write_bytes(file.read_bytes()[:40])
    with pytest.raises(DatasetError, match=re.escape(str(file))):
        load(folder_root)


def test_not_a_zip_archive(zip_root: Path) -> None:
    archive = zip_root / "images_background.zip"
    archive.write_bytes(archive.read_bytes()[:1000])
    with pytest.raises(DatasetError, match=re.escape(str(archive))) as caught:
        load(zip_root)
    assert "not a readable zip archive" in str(caught.value)


def test_missing_archive_says_where_it_looked_and_how_to_fix(zip_root: Path) -> None:
    (zip_root / "images_evaluation.zip").unlink()
    with pytest.raises(DatasetError) as caught:
        load(zip_root)
    message = str(caught.value)
    for part in ("images_evaluation.zip", str(zip_root), "--data-root", "METAGRAD_DATA"):
        assert part in message
    assert "download=True" in message and "metagrad data omniglot --download" in message


def test_missing_alphabet_is_reported(
    zip_root: Path, synthetic_members: dict[str, dict[str, bytes]]
) -> None:
    files = synthetic_members["images_background"]
    kept = {m: data for m, data in files.items() if "/Beta/" not in m}
    write_zip(zip_root / "images_background.zip", kept)
    with pytest.raises(DatasetError, match="found 6 characters") as caught:
        load(zip_root)
    assert "expected 8 characters" in str(caught.value)
    assert "expected_classes=None" in str(caught.value)
    assert "task.dataset: folder" in str(caught.value)
    assert len(load(zip_root, expected_classes=None)) == 6


def test_official_completeness_names_missing_alphabets(zip_root: Path) -> None:
    with pytest.raises(DatasetError, match="Missing alphabets: Alphabet_of_the_Magi") as caught:
        load_omniglot(zip_root)
    assert "30 images_background alphabets" in str(caught.value)


def test_character_with_missing_drawing(
    zip_root: Path, synthetic_members: dict[str, dict[str, bytes]]
) -> None:
    files = synthetic_members["images_background"]
    del files["images_background/Gamma/character01/0005_20.png"]
    write_zip(zip_root / "images_background.zip", files)
    with pytest.raises(DatasetError, match=r"Gamma/character01 .* has 19 drawings, expected 20"):
        load(zip_root)


def test_invalid_image_size(zip_root: Path) -> None:
    with pytest.raises(ConfigError, match="image_size"):
        load(zip_root, image_size=0)


# -- where the data and the cache are found ------------------------------------------------------


def test_metagrad_data_with_omniglot_subfolder(
    zip_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = zip_root.parent / "datasets"
    parent.mkdir()
    zip_root.rename(parent / "omniglot")
    monkeypatch.setenv("METAGRAD_DATA", str(parent))
    assert load_omniglot(expected_classes=len(CLASS_NAMES)).class_names == tuple(CLASS_NAMES)


def test_default_root_under_home(zip_root: Path, isolated_home: Path) -> None:
    default = isolated_home / ".cache/metagrad/omniglot"
    default.parent.mkdir(parents=True)
    zip_root.rename(default)
    assert len(load_omniglot(expected_classes=len(CLASS_NAMES))) == len(CLASS_NAMES)
    assert list(default.glob("omniglot-28px-*.npz"))


def test_cache_is_written_once_and_reused(zip_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = zip_root / "cache"
    first = load(zip_root, cache_dir=cache)
    files = list(cache.glob("omniglot-28px-*.npz"))
    assert len(files) == 1
    assert not list(cache.glob("*.tmp"))
    monkeypatch.setattr(omniglot, "_decode_png", no_decoding)
    second = load(zip_root, cache_dir=cache)
    assert torch.equal(first.images, second.images)
    assert first.class_names == second.class_names


def test_cache_is_per_image_size(zip_root: Path) -> None:
    load(zip_root, image_size=14)
    load(zip_root, image_size=28)
    assert len(list(zip_root.glob("omniglot-14px-*.npz"))) == 1
    assert len(list(zip_root.glob("omniglot-28px-*.npz"))) == 1


def test_changed_source_is_decoded_again(zip_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load(zip_root)
    archive = zip_root / "images_evaluation.zip"
    stat = archive.stat()
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    monkeypatch.setattr(omniglot, "_decode_png", no_decoding)
    with pytest.raises(AssertionError, match="decoded again"):
        load(zip_root)


def test_unreadable_cache_is_rebuilt(zip_root: Path) -> None:
    first = load(zip_root)
    (cache_file,) = zip_root.glob("omniglot-28px-*.npz")
    cache_file.write_bytes(b"broken")
    with pytest.warns(UserWarning, match="unreadable Omniglot cache"):
        second = load(zip_root)
    assert torch.equal(first.images, second.images)


def test_read_only_root_caches_under_home(zip_root: Path, isolated_home: Path) -> None:
    zip_root.chmod(0o555)
    try:
        load(zip_root)
        assert not list(zip_root.glob("*.npz"))
        assert len(list((isolated_home / ".cache/metagrad").glob("omniglot-28px-*.npz"))) == 1
    finally:
        zip_root.chmod(0o755)


def test_unwritable_cache_dir_is_an_error(zip_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "locked"
    cache.mkdir(mode=0o555)
    with pytest.raises(DatasetError, match="Choose a writable cache_dir"):
        load(zip_root, cache_dir=cache)


def test_download_fetches_missing_archives(
    tmp_path: Path, zip_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = {name: (zip_root / f"{name}.zip").as_uri() for name in omniglot.SETS}
    md5s = {name: md5_of(zip_root / f"{name}.zip") for name in omniglot.SETS}
    monkeypatch.setattr(omniglot, "OFFICIAL_URLS", urls)
    monkeypatch.setattr(omniglot, "OFFICIAL_MD5", md5s)
    empty = tmp_path / "fresh"
    images = load(empty, download=True)
    assert images.class_names == tuple(CLASS_NAMES)
    assert sorted(p.name for p in empty.glob("*.zip")) == [f"{n}.zip" for n in omniglot.SETS]


# -- integrity helpers ---------------------------------------------------------------------------


def test_checksums_match_hashlib(tmp_path: Path) -> None:
    file = tmp_path / "data.bin"
    file.write_bytes(bytes(range(256)) * 5000)
    assert sha256_of(file) == hashlib.sha256(file.read_bytes()).hexdigest()
    assert md5_of(file) == hashlib.md5(file.read_bytes()).hexdigest()


def test_download_with_wrong_checksum_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "source.zip"
    source.write_bytes(b"payload" * 1000)
    dest = tmp_path / "out" / "archive.zip"
    wrong = "0" * 32
    with pytest.raises(DatasetError) as caught:
        download(source.as_uri(), dest, md5=wrong, progress=False)
    message = str(caught.value)
    assert source.as_uri() in message and wrong in message and md5_of(source) in message
    assert not dest.exists()
    assert not list(dest.parent.iterdir())


def test_download_with_right_checksum(tmp_path: Path) -> None:
    source = tmp_path / "source.zip"
    source.write_bytes(b"payload" * 1000)
    dest = tmp_path / "out" / "archive.zip"
    result = download(source.as_uri(), dest, md5=md5_of(source), sha256=sha256_of(source))
    assert result == dest
    assert dest.read_bytes() == source.read_bytes()
    assert not dest.with_suffix(".zip.part").exists()


def test_download_of_missing_url_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "archive.zip"
    with pytest.raises(DatasetError, match="Could not download"):
        download((tmp_path / "absent.zip").as_uri(), dest, progress=False)
    assert not list(dest.parent.iterdir())


def test_extract_zip(tmp_path: Path, synthetic_members: dict[str, dict[str, bytes]]) -> None:
    archive = write_zip(tmp_path / "a.zip", synthetic_members["images_evaluation"])
    dest = extract_zip(archive, tmp_path / "extracted")
    member = next(iter(synthetic_members["images_evaluation"]))
    assert (dest / member).read_bytes() == synthetic_members["images_evaluation"][member]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "extracted", "home"]


@pytest.mark.parametrize("content", [b"not a zip at all", None])
def test_extract_bad_zip_names_it_and_leaves_nothing(
    tmp_path: Path, synthetic_members: dict[str, dict[str, bytes]], content: bytes | None
) -> None:
    archive = write_zip(tmp_path / "a.zip", synthetic_members["images_evaluation"])
    data = archive.read_bytes()
    archive.write_bytes(content if content is not None else data[: len(data) // 2])
    with pytest.raises(DatasetError, match=re.escape(str(archive))):
        extract_zip(archive, tmp_path / "extracted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "home"]


# -- ClassImages ---------------------------------------------------------------------------------


def test_class_images_validation() -> None:
    with pytest.raises(DatasetError, match="uint8"):
        ClassImages(torch.zeros(2, 3, 1, 4, 4), ("a", "b"))
    with pytest.raises(DatasetError, match="5 dimensions"):
        ClassImages(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), ("a", "b"))
    with pytest.raises(DatasetError, match="2 classes of images but 1 class names"):
        ClassImages(torch.zeros(2, 3, 1, 4, 4, dtype=torch.uint8), ("a",))


def test_subset_and_to() -> None:
    images = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1, 1).expand(4, 2, 1, 3, 3)
    classes = ClassImages(images.contiguous(), ("a", "b", "c", "d"))
    picked = classes.subset([3, 1])
    assert picked.class_names == ("d", "b")
    assert picked.images[:, 0, 0, 0, 0].tolist() == [3, 1]
    assert classes.to("cpu").class_names == classes.class_names
    with pytest.raises(IndexError, match="out of range"):
        classes.subset([4])


def test_with_rotations_adds_classes_rotated_counter_clockwise() -> None:
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 256, (2, 3, 1, 5, 5), dtype=np.uint8))
    classes = ClassImages(pixels, ("A/character01", "A/character02"))
    rotated = classes.with_rotations()
    assert len(rotated) == 4 * len(classes)
    assert rotated.class_names[:4] == tuple(f"A/character01/rot{a:03d}" for a in (0, 90, 180, 270))
    for k in range(4):
        assert torch.equal(rotated.images[4 + k], torch.rot90(pixels[1], k, dims=(-2, -1)))
    as_pil = Image.fromarray(pixels[0, 0, 0].numpy()).rotate(90)
    np.testing.assert_array_equal(rotated.images[1, 0, 0].numpy(), np.asarray(as_pil))
    with pytest.raises(ValueError, match="multiple of 90"):
        classes.with_rotations((45,))


# -- fixed splits --------------------------------------------------------------------------------


def all_official_names() -> list[str]:
    return sorted(name for part in omniglot_splits("maml").values() for name in part)


def test_maml_split_sizes_and_disjointness() -> None:
    splits = omniglot_splits("maml")
    assert {part: len(names) for part, names in splits.items()} == {
        "train": 1100,
        "val": 100,
        "test": 423,
    }
    assert len(set().union(*map(set, splits.values()))) == 1623
    assert omniglot_split_rotations("maml") == {"train": True, "val": True, "test": True}


def test_vinyals_split_is_alphabet_level() -> None:
    splits = omniglot_splits("vinyals")
    assert {part: len(names) for part, names in splits.items()} == {
        "train": 1028,
        "val": 172,
        "test": 423,
    }
    assert sorted(name for part in splits.values() for name in part) == all_official_names()
    val_alphabets = {name.split("/")[0] for name in splits["val"]}
    assert val_alphabets == {
        "Armenian",
        "Bengali",
        "Early_Aramaic",
        "Hebrew",
        "Mkhedruli_(Georgian)",
    }
    assert [n for n in splits["test"] if n.startswith("Gurmukhi/")] == [
        f"Gurmukhi/character{i}" for i in range(42, 46)
    ]


def test_unknown_split_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="valid splits: lake, maml, vinyals"):
        omniglot_splits("random")
    fake = ClassImages(torch.zeros(0, 1, 1, 1, 1, dtype=torch.uint8), ())
    with pytest.raises(ConfigError, match="valid parts: train, val, test"):
        split_classes(fake, "maml", "training")


def test_split_classes_by_name_with_rotations() -> None:
    names = all_official_names()
    index = torch.arange(len(names)) % 251
    fake = ClassImages(index.to(torch.uint8).view(-1, 1, 1, 1, 1), tuple(names))
    test = split_classes(fake, "maml", "test")
    assert list(test.class_names) == omniglot_splits("maml")["test"]
    assert test.images[0, 0, 0, 0, 0] == names.index(test.class_names[0]) % 251
    rotated = split_classes(fake.with_rotations(), "vinyals", "val")
    assert len(rotated) == 4 * 172
    assert rotated.class_names[:2] == ("Armenian/character01/rot000", "Armenian/character01/rot090")
    with pytest.raises(DatasetError, match="not in these images"):
        split_classes(fake.subset(range(10)), "maml", "train")


def test_summary_counts_split_classes() -> None:
    names = all_official_names()
    fake = ClassImages(torch.zeros(len(names), 2, 1, 3, 3, dtype=torch.uint8), tuple(names))
    text = summary(fake)
    assert "1623 classes x 2 examples" in text
    assert "split maml: train 1100, val 100, test 423 classes" in text
    assert "split vinyals: train 1028, val 172, test 423 classes" in text


# -- the real dataset ----------------------------------------------------------------------------

REAL_ROOT = Path(__file__).parents[3].parent / "shared/datasets/omniglot"
needs_real_data = pytest.mark.skipif(
    not (REAL_ROOT / "images_background.zip").is_file(),
    reason=f"the real Omniglot archives are not in {REAL_ROOT}",
)


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("omniglot-cache")


@pytest.fixture(scope="module")
def real_omniglot(real_cache: Path) -> ClassImages:
    return load_omniglot(REAL_ROOT, cache_dir=real_cache)


@needs_real_data
def test_real_omniglot_loads(real_omniglot: ClassImages) -> None:
    assert real_omniglot.images.shape == (1623, 20, 1, 28, 28)
    assert real_omniglot.images.dtype == torch.uint8
    assert real_omniglot.class_names[0] == "Alphabet_of_the_Magi/character01"
    assert real_omniglot.class_names[-1] == "ULOG/character26"
    stroke = real_omniglot.images.float().mean().item() / 255
    assert 0.03 < stroke < 0.2, "strokes are thin and bright on a dark background"
    assert real_omniglot.images[:, :, :, 0, :].float().mean() < 10, "borders are background"


@needs_real_data
def test_real_omniglot_splits_resolve(real_omniglot: ClassImages) -> None:
    assert sorted(real_omniglot.class_names) == all_official_names()
    for name, sizes in (("maml", (1100, 100, 423)), ("vinyals", (1028, 172, 423))):
        parts = [split_classes(real_omniglot, name, part) for part in ("train", "val", "test")]
        assert tuple(len(part) for part in parts) == sizes


@needs_real_data
def test_real_omniglot_cached_load(
    real_omniglot: ClassImages, real_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(omniglot, "_decode_png", no_decoding)
    start = time.perf_counter()
    again = load_omniglot(REAL_ROOT, cache_dir=real_cache)
    assert time.perf_counter() - start < 5
    assert torch.equal(again.images, real_omniglot.images)


@needs_real_data
def test_split_asset_is_what_the_builder_makes() -> None:
    names = omniglot_class_names(REAL_ROOT)
    assert render(build_asset(names)) == asset_path().read_text("utf-8")
