"""Build ``splits/omniglot.json``, the fixed Omniglot class splits, from the dataset's class names.

Usage::

    python -m metagrad.data.omniglot_splits_build --root ../shared/datasets/omniglot
    python -m metagrad.data.omniglot_splits_build --root ../shared/datasets/omniglot --check

The first form rewrites the asset; ``--check`` only verifies that the committed asset matches.
Only the archive listings are read (no image is decoded), so either takes about a second.

``maml``: the MAML reference code (cbfinn/maml, ``data_generator.py``) lists all 1623 character
folders, does ``random.seed(1); random.shuffle(folders)`` and takes the first 1100 for
meta-training, the next 100 for validation and the last 423 for testing. Its list comes from
``os.listdir`` and so its order is not portable; here the list is all names sorted by (set,
alphabet, character), i.e. the order of ``load_omniglot``, shuffled with ``random.Random(1)``.
The characters are therefore not the same as in the MAML runs, only the rule is.

``vinyals``: the alphabet-level split of Vinyals et al. (2016) as distributed with the
Prototypical Networks code (jakesnell/prototypical-networks, ``data/omniglot/splits/vinyals``)
and with torchmeta (``torchmeta/datasets/assets/omniglot``). Validation: 5 background alphabets
(172 characters); test: 12 evaluation alphabets plus Gurmukhi characters 42-45 (423);
training: everything else (1028).

``lake``: the original benchmark of Lake, Salakhutdinov and Tenenbaum (2015): training = the 964
characters of ``images_background`` (30 alphabets), test = the 659 characters of
``images_evaluation`` (20 alphabets), no validation classes. Any validation set would have to be
taken from one of the two sets and change its size, so a run on this split trains with
``train.val_tasks: 0`` and keeps its last parameters as the best.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from metagrad.data.omniglot import NUM_CLASSES, omniglot_class_names

MAML_SIZES = {"train": 1100, "val": 100, "test": 423}
VINYALS_VAL_ALPHABETS = frozenset(
    {"Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)"}
)
VINYALS_TEST_ALPHABETS = frozenset(
    {
        "Kannada",
        "Keble",
        "Malayalam",
        "Manipuri",
        "Mongolian",
        "Old_Church_Slavonic_(Cyrillic)",
        "Oriya",
        "Sylheti",
        "Syriac_(Serto)",
        "Tengwar",
        "Tibetan",
        "ULOG",
    }
)
VINYALS_TEST_GURMUKHI_FROM = 42
VINYALS_SIZES = {"train": 1028, "val": 172, "test": 423}
LAKE_TEST_ALPHABETS = VINYALS_TEST_ALPHABETS | {
    "Angelic",
    "Atemayar_Qelisayer",
    "Atlantean",
    "Aurek-Besh",
    "Avesta",
    "Ge_ez",
    "Glagolitic",
    "Gurmukhi",
}
"""The 20 alphabets of ``images_evaluation``."""
LAKE_SIZES = {"train": 964, "val": 0, "test": 659}


def maml_split(names: Sequence[str]) -> dict[str, list[str]]:
    """The MAML rule applied to ``names`` in load order: seeded shuffle, then 1100/100/423."""
    order = list(names)
    random.Random(1).shuffle(order)
    train_end = MAML_SIZES["train"]
    val_end = train_end + MAML_SIZES["val"]
    return {"train": order[:train_end], "val": order[train_end:val_end], "test": order[val_end:]}


def _vinyals_part(name: str) -> str:
    alphabet, character = name.split("/")
    if alphabet in VINYALS_VAL_ALPHABETS:
        return "val"
    if alphabet in VINYALS_TEST_ALPHABETS:
        return "test"
    if (
        alphabet == "Gurmukhi"
        and int(character.removeprefix("character")) >= VINYALS_TEST_GURMUKHI_FROM
    ):
        return "test"
    return "train"


def vinyals_split(names: Sequence[str]) -> dict[str, list[str]]:
    """The Vinyals et al. alphabet split of ``names``, each part in load order."""
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for name in names:
        parts[_vinyals_part(name)].append(name)
    return parts


def lake_split(names: Sequence[str]) -> dict[str, list[str]]:
    """The Lake et al. split of ``names``: background set for training, evaluation set for test."""
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for name in names:
        parts["test" if name.split("/")[0] in LAKE_TEST_ALPHABETS else "train"].append(name)
    return parts


def build_asset(names: Sequence[str]) -> dict[str, Any]:
    """The content of ``splits/omniglot.json`` for the 1623 class names in load order."""
    if len(names) != NUM_CLASSES or len(set(names)) != NUM_CLASSES:
        raise ValueError(f"expected {NUM_CLASSES} distinct class names, got {len(names)}")
    maml, vinyals, lake = maml_split(names), vinyals_split(names), lake_split(names)
    for split, sizes in ((maml, MAML_SIZES), (vinyals, VINYALS_SIZES), (lake, LAKE_SIZES)):
        got = {part: len(members) for part, members in split.items()}
        if got != sizes:
            raise ValueError(f"split sizes {got} differ from {sizes}")
    return {
        "format": 1,
        "dataset": "omniglot",
        "class_names": "Alphabet/characterNN, as in load_omniglot; rotations are not listed",
        "builder": "python -m metagrad.data.omniglot_splits_build",
        "splits": {
            "maml": {
                "source": "cbfinn/maml data_generator.py (Finn et al., 2017)",
                "rule": (
                    "all 1623 names sorted by (set, alphabet, character), background set "
                    "first; random.Random(1).shuffle; train = first 1100, val = next 100, "
                    "test = last 423. MAML shuffles an os.listdir order, so its characters "
                    "differ; the rule and sizes are the same."
                ),
                "rotations": {"train": True, "val": True, "test": True},
                "rotation_note": (
                    "MAML rotates every class of every sampled task (meta-training and "
                    "evaluation alike) by a random multiple of 90 degrees."
                ),
                **maml,
            },
            "vinyals": {
                "source": (
                    "Vinyals et al., 2016, as distributed in jakesnell/prototypical-networks "
                    "data/omniglot/splits/vinyals and tristandeleu/pytorch-meta "
                    "torchmeta/datasets/assets/omniglot"
                ),
                "rule": (
                    "val = alphabets " + ", ".join(sorted(VINYALS_VAL_ALPHABETS)) + "; test = "
                    "alphabets " + ", ".join(sorted(VINYALS_TEST_ALPHABETS)) + " and Gurmukhi "
                    f"characters {VINYALS_TEST_GURMUKHI_FROM}-45; train = all other characters"
                ),
                "rotations": {"train": True, "val": True, "test": True},
                "rotation_note": (
                    "The Prototypical Networks split files list every character at 0, 90, 180 "
                    "and 270 degrees, each rotation a class of its own (with_rotations)."
                ),
                **vinyals,
            },
            "lake": {
                "source": (
                    "Lake, Salakhutdinov and Tenenbaum, 2015: the background set for learning, "
                    "the evaluation set for one-shot classification"
                ),
                "rule": (
                    "train = the 964 characters of images_background (30 alphabets); test = the "
                    "659 characters of images_evaluation (alphabets "
                    + ", ".join(sorted(LAKE_TEST_ALPHABETS))
                    + "); no validation classes (train with train.val_tasks = 0)"
                ),
                "rotations": {"train": True, "val": False, "test": False},
                "rotation_note": (
                    "Lake et al. use no rotations. Rotated copies of the training characters as "
                    "extra classes are data augmentation only; test characters are not rotated."
                ),
                **lake,
            },
        },
    }


def render(asset: dict[str, Any]) -> str:
    """The asset as committed: indented JSON, one class name per line."""
    return json.dumps(asset, indent=1, ensure_ascii=False) + "\n"


def asset_path() -> Path:
    """Where the asset lives in the source tree."""
    return Path(str(resources.files("metagrad.data").joinpath("splits/omniglot.json")))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="Omniglot folder (default: METAGRAD_DATA or the cache)")
    parser.add_argument("--check", action="store_true", help="verify the asset, do not write it")
    args = parser.parse_args(argv)
    text = render(build_asset(omniglot_class_names(args.root, expected_classes=None)))
    path = asset_path()
    if args.check:
        current = path.read_text("utf-8") if path.is_file() else ""
        if current != text:
            print(f"{path} is out of date: run without --check to rewrite it.", file=sys.stderr)
            return 1
        print(f"{path} is up to date.")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
