"""Omniglot's original benchmark (Lake et al. 2015): the `lake` class split, within-alphabet
tasks drawn by distinct drawers, and training without validation classes (`val_tasks: 0`).

Most tests use small images made here, whose pixels spell out each example's class and drawer;
the tests at the end use the real dataset from the shared folder when it is present.
"""

from __future__ import annotations

import io
import random
import re
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from metagrad import build
from metagrad.build import build_tasks, split_images
from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore
from metagrad.config import Config, load_config
from metagrad.data.class_images import ClassImages
from metagrad.data.omniglot import (
    _decode_png,
    load_omniglot,
    omniglot_split_rotations,
    omniglot_splits,
    split_classes,
    summary,
)
from metagrad.data.omniglot_splits_build import LAKE_TEST_ALPHABETS
from metagrad.errors import ConfigError, DatasetError
from metagrad.evaluate import evaluate_run
from metagrad.logging import read_metrics
from metagrad.tasks.batch import TaskBatch
from metagrad.tasks.sampler import EpisodeSampler
from metagrad.train import fit

DRAWERS = 20
PRESET = "maml-omniglot-20w1s-lake"


def alphabet(name: str) -> str:
    return name.split("/")[0]


def official_names() -> list[str]:
    return sorted(name for part in omniglot_splits("maml").values() for name in part)


def tagged(names: Sequence[str], drawers: int = DRAWERS) -> ClassImages:
    """2x2 images whose pixels spell (class index, drawer): [[class // 256, class % 256],
    [drawer, 0]], example m being drawer m + 1 as in the loaded dataset."""
    pixels = torch.zeros(len(names), drawers, 1, 2, 2, dtype=torch.uint8)
    index = torch.arange(len(names))
    pixels[:, :, 0, 0, 0] = (index // 256)[:, None]
    pixels[:, :, 0, 0, 1] = (index % 256)[:, None]
    pixels[:, :, 0, 1, 0] = torch.arange(1, drawers + 1)
    return ClassImages(pixels, tuple(names))


def spelled(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(class index, drawer) of each example of `tagged` images, `[T, S, 1, 2, 2]` -> `[T, S]`."""
    p = (x[:, :, 0] * 255).round().long()
    return p[:, :, 0, 0] * 256 + p[:, :, 0, 1], p[:, :, 1, 0]


def check_within_alphabet(batch: TaskBatch, names: Sequence[str], n: int, k: int, q: int) -> None:
    """Every task: n classes of one alphabet, each with the same k support and q query
    drawers, support and query drawers disjoint, one label per class."""
    support_classes, support_drawers = spelled(batch.x_support)
    query_classes, query_drawers = spelled(batch.x_query)
    for t in range(batch.num_tasks):
        classes = set(support_classes[t].tolist())
        assert len(classes) == n and set(query_classes[t].tolist()) == classes
        assert len({alphabet(names[c]) for c in classes}) == 1
        support, query = set(), set()
        for c in classes:
            in_support = support_classes[t] == c
            in_query = query_classes[t] == c
            drawn = (support_drawers[t][in_support].tolist(), query_drawers[t][in_query].tolist())
            assert (len(set(drawn[0])), len(set(drawn[1]))) == (k, q)
            support.add(frozenset(drawn[0]))
            query.add(frozenset(drawn[1]))
            labels = set(batch.y_support[t][in_support].tolist())
            assert len(labels) == 1 and labels == set(batch.y_query[t][in_query].tolist())
        assert len(support) == 1 and len(query) == 1, "the same drawers for every class"
        assert not next(iter(support)) & next(iter(query)), "support and query drawers differ"


def alphabets_of(batch: TaskBatch, names: Sequence[str]) -> list[set[str]]:
    classes, _ = spelled(batch.x_support)
    return [{alphabet(names[c]) for c in task.tolist()} for task in classes]


# -- the split -----------------------------------------------------------------------------------


def test_lake_split_is_the_background_and_evaluation_sets() -> None:
    splits = omniglot_splits("lake")
    assert {part: len(names) for part, names in splits.items()} == {
        "train": 964,
        "val": 0,
        "test": 659,
    }
    assert sorted(splits["train"] + splits["test"]) == official_names()
    train_alphabets = {alphabet(name) for name in splits["train"]}
    test_alphabets = {alphabet(name) for name in splits["test"]}
    assert (len(train_alphabets), len(test_alphabets)) == (30, 20)
    assert not train_alphabets & test_alphabets
    assert test_alphabets == LAKE_TEST_ALPHABETS
    assert omniglot_split_rotations("lake") == {"train": True, "val": False, "test": False}


def test_lake_split_selects_classes_and_summarises() -> None:
    images = tagged(official_names(), drawers=2)
    parts = {part: split_classes(images, "lake", part) for part in ("train", "val", "test")}
    assert [len(part) for part in parts.values()] == [964, 0, 659]
    assert parts["val"].images.shape[1:] == images.images.shape[1:]
    assert "split lake: train 964, val 0, test 659 classes; rotations by default in train" in (
        summary(images)
    )


# -- within-alphabet tasks -----------------------------------------------------------------------

SIZES = {"A": 3, "B": 5, "C": 8, "D": 2}
SMALL = [f"{a}/character{i:02d}" for a, size in SIZES.items() for i in range(1, size + 1)]


def small_sampler(n_way: int = 3, k: int = 2, q: int = 3, seed: int = 0) -> EpisodeSampler:
    images = {"train": tagged(SMALL), "test": tagged(SMALL)}
    return EpisodeSampler(images, n_way, k, q, seed, episodes="within_alphabet")


def test_within_alphabet_tasks_take_one_alphabet_and_distinct_drawers() -> None:
    sampler = small_sampler()
    batch = sampler.sample("test", 0, 400)
    check_within_alphabet(batch, SMALL, 3, 2, 3)
    chosen = [next(iter(a)) for a in alphabets_of(batch, SMALL)]
    assert set(chosen) == {"A", "B", "C"}, "D has fewer than 3 characters: never chosen"
    assert min(chosen.count(a) for a in "ABC") > 80, "the alphabet is drawn uniformly per task"


def test_within_alphabet_tasks_with_rotated_copies() -> None:
    """Rotated copies are classes of their character's alphabet: D has 2 x 4 = 8 classes."""
    value = torch.arange(1, len(SMALL) + 1, dtype=torch.uint8)  # every pixel: class index + 1
    pixels = value[:, None, None, None, None].expand(len(SMALL), 6, 1, 2, 2).contiguous()
    images = ClassImages(pixels, tuple(SMALL)).with_rotations()
    sampler = EpisodeSampler({"test": images}, 8, 1, 4, 3, episodes="within_alphabet")
    classes = (sampler.sample("test", 5, 200).x_support[:, :, 0, 0, 0] * 255).round().long() - 1
    alphabets = [{alphabet(SMALL[c]) for c in task.tolist()} for task in classes]
    assert all(len(a) == 1 for a in alphabets)
    assert {next(iter(a)) for a in alphabets} == set(SIZES), "D is 8-way with its rotations"


def test_within_alphabet_stream_is_a_function_of_seed_split_and_index() -> None:
    first = small_sampler(seed=4).sample("test", 7, 6)
    again = small_sampler(seed=4).sample("test", 7, 6)
    assert all(torch.equal(a, b) for a, b in zip(first.tensors(), again.tensors(), strict=True))
    for other in (
        small_sampler(seed=5).sample("test", 7, 6),
        small_sampler(seed=4).sample("test", 8, 6),
        small_sampler(seed=4).sample("train", 7, 6),
    ):
        assert not torch.equal(first.x_support, other.x_support)


def test_any_episodes_are_the_default_stream() -> None:
    images = {"test": tagged(SMALL)}
    default = EpisodeSampler(images, 3, 2, 3, 1).sample("test", 2, 5)
    explicit = EpisodeSampler(images, 3, 2, 3, 1, episodes="any").sample("test", 2, 5)
    assert all(
        torch.equal(a, b) for a, b in zip(default.tensors(), explicit.tensors(), strict=True)
    )
    assert any(len(a) > 1 for a in alphabets_of(default, SMALL))


def test_within_alphabet_refuses_ways_beyond_every_alphabet() -> None:
    with pytest.raises(ConfigError, match=r"largest alphabet of the train split, C, has 8 classes"):
        small_sampler(n_way=9)


def test_within_alphabet_is_for_omniglot_only() -> None:
    with pytest.raises(
        ConfigError, match=r"only Omniglot's classes have alphabets.*episodes = any"
    ):
        load_config("maml-sinusoid-5shot", ["task.episodes=within_alphabet"])
    with pytest.raises(ConfigError, match=r"task.episodes = 'alphabet' is not allowed"):
        load_config(PRESET, ["task.episodes=alphabet"])


# -- the preset through build_tasks --------------------------------------------------------------


@pytest.fixture
def fake_omniglot(monkeypatch: pytest.MonkeyPatch) -> Iterator[ClassImages]:
    """`load_omniglot` as seen by `metagrad.build`: every official character, tagged pixels."""
    images = tagged(official_names())
    monkeypatch.setattr(build, "load_omniglot", lambda *args, **kwargs: images)
    split_images.cache_clear()
    yield images
    split_images.cache_clear()


def test_preset_draws_within_alphabet_test_tasks_and_any_training_tasks(
    fake_omniglot: ClassImages,
) -> None:
    config = load_config(PRESET, ["task.image_size=2", "task.rotations=[]"])
    assert (config.task.class_split, config.task.episodes) == ("lake", "within_alphabet")
    assert config.train.val_tasks == 0
    evaluation = build_tasks(config, evaluation=True)
    test_names = evaluation.images["test"].class_names
    batch = evaluation.sample("test", 0, 60)
    check_within_alphabet(batch, fake_omniglot.class_names, 20, 1, config.eval.n_query)
    assert len({next(iter(a)) for a in alphabets_of(batch, fake_omniglot.class_names)}) > 10
    assert {alphabet(n) for n in test_names} == LAKE_TEST_ALPHABETS
    training = build_tasks(config).sample("train", 0, 4)
    assert all(len(a) > 1 for a in alphabets_of(training, fake_omniglot.class_names))
    with pytest.raises(ConfigError, match=r"the val split has no classes"):
        evaluation.sample("val", 0, 1)


def test_preset_with_validation_tasks_names_the_fix(
    fake_omniglot: ClassImages, tmp_path: Path
) -> None:
    config = load_config(PRESET, ["task.image_size=2", "train.val_tasks=10", "train.device=cpu"])
    fix = "task.class_split = lake has no validation classes; set train.val_tasks = 0"
    with pytest.raises(ConfigError, match=re.escape(fix)):
        fit(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# -- training without validation -----------------------------------------------------------------


def tensor_splits() -> dict[str, ClassImages]:
    generator = torch.Generator().manual_seed(0)
    pixels = (torch.rand(10, 4, 1, 12, 12, generator=generator) * 255).to(torch.uint8)
    names = tuple(f"class{i}" for i in range(10))
    images = ClassImages(pixels, names)
    return {
        "train": images.subset(range(6)),
        "val": images.subset([]),
        "test": images.subset(range(6, 10)),
    }


def folder_config(*overrides: str) -> Config:
    return load_config(
        "maml-omniglot-5w1s",
        [
            "task.dataset=folder",
            "task.n_way=3",
            "task.k_shot=1",
            "task.n_query=2",
            "task.image_size=12",
            "task.rotations=[]",
            "model.hidden=[4]",
            "train.meta_batch_size=2",
            "train.iterations=6",
            "train.strategy=loop",
            "train.device=cpu",
            "train.val_every=4",
            "train.log_every=2",
            "train.ckpt_every=2",
            "eval.num_tasks=4",
            "eval.n_query=2",
            "eval.inner_steps=1",
            *overrides,
        ],
    )


def test_training_without_validation_keeps_the_last_checkpoint_as_the_best(
    tmp_path: Path,
) -> None:
    images = tensor_splits()
    run = fit(folder_config("train.val_tasks=0"), tmp_path / "run", progress=False, images=images)
    store = CheckpointStore(run / CHECKPOINT_DIR)
    assert store.steps("best") == [6]
    best, last = store.load("best"), store.load("last")
    assert best["best"] == {"step": 6, "value": None}
    assert all(torch.equal(best["model"][k], v) for k, v in last["model"].items())
    assert {row["split"] for row in read_metrics(run / "metrics.jsonl")} == {"train"}
    result = evaluate_run(run, images=images)
    assert (result["checkpoint"], result["step"], result["num_tasks"]) == ("best", 6, 4)


def test_validation_needs_validation_classes_and_ranked_checkpoints(tmp_path: Path) -> None:
    config = folder_config("train.val_tasks=4")
    with pytest.raises(ConfigError, match=r"has no validation classes; set train.val_tasks = 0"):
        fit(config, tmp_path / "run", progress=False, images=tensor_splits())
    with pytest.raises(ConfigError, match=r"train.keep_best = 3 .* set train.keep_best = 1"):
        folder_config("train.val_tasks=0", "train.keep_best=3")
    with pytest.raises(ConfigError, match=r"train.val_tasks = -1 must be >= 0"):
        folder_config("train.val_tasks=-1")


# -- drawer order in the archives ----------------------------------------------------------------


def drawing_png(drawer: int) -> bytes:
    """A 105x105 drawing whose black bar's height tells the drawer."""
    image = Image.new("1", (105, 105), 1)
    ImageDraw.Draw(image).rectangle((10, 10, 90, 10 + 4 * drawer), fill=0)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_archives(root: Path, rename: dict[str, str] | None = None) -> None:
    """Two characters per set, their drawings stored in a shuffled order."""
    layout = {"images_background": ["Alpha", "Beta"], "images_evaluation": ["Gamma"]}
    number = 0
    for set_name, alphabets in layout.items():
        members = []
        for alphabet_name in alphabets:
            number += 1
            for drawer in range(1, DRAWERS + 1):
                path = f"{set_name}/{alphabet_name}/character01/{number:04d}_{drawer:02d}.png"
                members.append(((rename or {}).get(path, path), drawing_png(drawer)))
        random.Random(number).shuffle(members)
        root.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(root / f"{set_name}.zip", "w") as archive:
            for member, data in members:
                archive.writestr(member, data)


def test_example_m_is_drawer_m_plus_one(tmp_path: Path) -> None:
    write_archives(tmp_path / "data")
    images = load_omniglot(
        tmp_path / "data", image_size=105, cache_dir=tmp_path, expected_classes=3
    )
    bar_rows = (images.images[:, :, 0, :, 50] > 127).sum(-1)  # [classes, examples]
    assert torch.equal(bar_rows, (4 * torch.arange(1, DRAWERS + 1) + 1).expand(3, DRAWERS))


def test_renamed_drawings_are_refused(tmp_path: Path) -> None:
    member = "images_background/Beta/character01/0002_07.png"
    write_archives(tmp_path / "data", {member: member.replace("_07", "_21")})
    with pytest.raises(DatasetError, match=r"Beta/character01 .* not named <ID>_<DD>.png"):
        load_omniglot(tmp_path / "data", cache_dir=tmp_path, expected_classes=3)


# -- the real dataset ----------------------------------------------------------------------------

REAL_ROOT = Path(__file__).parents[2].parent / "shared/datasets/omniglot"
needs_real_data = pytest.mark.skipif(
    not (REAL_ROOT / "images_background.zip").is_file(),
    reason=f"the real Omniglot archives are not in {REAL_ROOT}",
)


@pytest.fixture(scope="module")
def real_omniglot(tmp_path_factory: pytest.TempPathFactory) -> ClassImages:
    return load_omniglot(REAL_ROOT, cache_dir=tmp_path_factory.mktemp("omniglot-cache"))


def real_alphabets(set_name: str) -> set[str]:
    with zipfile.ZipFile(REAL_ROOT / f"{set_name}.zip") as archive:
        return {name.split("/")[1] for name in archive.namelist() if name.endswith(".png")}


@needs_real_data
def test_real_lake_split_counts_and_alphabets(real_omniglot: ClassImages) -> None:
    parts = {p: split_classes(real_omniglot, "lake", p) for p in ("train", "val", "test")}
    assert [len(part) for part in parts.values()] == [964, 0, 659]
    train, test = ({alphabet(n) for n in parts[p].class_names} for p in ("train", "test"))
    assert train == real_alphabets("images_background") and len(train) == 30
    assert test == real_alphabets("images_evaluation") and len(test) == 20
    assert not train & test


@needs_real_data
def test_real_examples_are_in_drawer_order(real_omniglot: ClassImages) -> None:
    """Example m of a character is its file `<ID>_<m+1>.png`, decoded on its own (the loader
    checked the names of all 1623 characters when it decoded them)."""
    folder = "images_evaluation/Tengwar/character07/"
    with zipfile.ZipFile(REAL_ROOT / "images_evaluation.zip") as archive:
        names = sorted(n for n in archive.namelist() if n.startswith(folder) and n.endswith(".png"))
        index = real_omniglot.class_names.index("Tengwar/character07")
        for m, member in enumerate(names):
            assert member.endswith(f"_{m + 1:02d}.png")
            decoded = _decode_png(archive.read(member), member, 28)
            assert (real_omniglot.images[index, m, 0].numpy() == decoded).all()


@needs_real_data
def test_real_within_alphabet_test_tasks(real_omniglot: ClassImages) -> None:
    names = real_omniglot.class_names
    test = split_classes(tagged(names), "lake", "test")
    sampler = EpisodeSampler({"test": test}, 20, 1, 5, seed=0, episodes="within_alphabet")
    batch = sampler.sample("test", 0, 300)
    check_within_alphabet(batch, names, 20, 1, 5)
    assert {next(iter(a)) for a in alphabets_of(batch, names)} == LAKE_TEST_ALPHABETS
    again = EpisodeSampler({"test": test}, 20, 1, 5, seed=0, episodes="within_alphabet")
    assert torch.equal(again.sample("test", 0, 300).x_query, batch.x_query)


@needs_real_data
def test_real_preset_builds_its_tasks(
    real_omniglot: ClassImages, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build, "load_omniglot", lambda *args, **kwargs: real_omniglot)
    split_images.cache_clear()
    try:
        config = load_config(PRESET)
        evaluation = build_tasks(config, evaluation=True)
        assert [len(evaluation.images[p]) for p in ("train", "val", "test")] == [4 * 964, 0, 659]
        batch = evaluation.sample("test", 3, 2)
        assert batch.x_support.shape == (2, 20, 1, 28, 28)
        assert batch.x_query.shape == (2, 20 * config.eval.n_query, 1, 28, 28)
    finally:
        split_images.cache_clear()
