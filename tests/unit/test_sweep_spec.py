"""Sweep specifications: grids and W&B files parsed, bad keys and values refused before anything
runs (the message naming the key), and run names (config hashes) that stay put."""

import subprocess
import sys

import pytest

from metagrad.config import load_config
from metagrad.errors import ConfigError
from metagrad.sweeps.spec import grid_sweep, identity, spec_sweep, split_values

BASE = "maml-sinusoid-5shot"


def test_grid_is_every_combination_first_key_slowest():
    sweep = grid_sweep(BASE, ["algorithm.inner_steps=1,5", "model.hidden=[32],[64, 64]"])
    assert [c.values for c in sweep.cells] == [
        {"algorithm.inner_steps": 1, "model.hidden": [32]},
        {"algorithm.inner_steps": 1, "model.hidden": [64, 64]},
        {"algorithm.inner_steps": 5, "model.hidden": [32]},
        {"algorithm.inner_steps": 5, "model.hidden": [64, 64]},
    ]
    configs = [config for _, config in sweep.resolved()]
    assert [c.model.hidden for c in configs] == [(32,), (64, 64), (32,), (64, 64)]
    assert {c.algorithm.inner_steps for c in configs} == {1, 5}


def test_values_split_at_top_level_commas_only():
    assert split_values('2,3,[32,32],"a,b",{x: 1, y: 2}', "k") == [
        "2",
        "3",
        "[32,32]",
        '"a,b"',
        "{x: 1, y: 2}",
    ]
    for bad in ("1,,2", "[1,2", "1,"):
        with pytest.raises(ConfigError, match="sweep key 'k'"):
            split_values(bad, "k")


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        (["task.n_wya=2,3"], "n_wya"),
        (["train.meta_batch_size=4,x"], "meta_batch_size"),
        (["train.meta_batch_size=4,0"], "meta_batch_size"),
        (["algorithm.inner_steps"], "not of the form key=v1,v2"),
        (["algorithm.inner_steps=1,2", "algorithm.inner_steps=3,4"], "given twice"),
    ],
)
def test_bad_keys_and_values_are_refused_naming_the_key(axes, message):
    with pytest.raises(ConfigError, match=message):
        grid_sweep(BASE, axes).resolved()


def test_wandb_grid_file(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        "program: train.py\n"  # W&B's own fields beside the sweep are left alone
        "method: grid\n"
        "metric: {name: post_mse, goal: minimize}\n"
        "parameters:\n"
        "  algorithm.inner_steps: {values: [1, 5]}\n"
        "  train.meta_batch_size: {value: 4}\n"
        "  model.hidden: {values: [[32], [64]]}\n"
    )
    sweep = spec_sweep(BASE, spec)
    assert sweep.metric == {"name": "post_mse", "goal": "minimize"}
    assert len(sweep.cells) == 4
    assert {c.values["train.meta_batch_size"] for c in sweep.cells} == {4}
    assert [c.values["model.hidden"] for c in sweep.cells[:2]] == [[32], [64]]


def test_wandb_random_file_is_reproducible(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        "method: random\n"
        "run_cap: 6\n"
        "parameters:\n"
        "  algorithm.inner_lr: {min: 0.001, max: 0.1, distribution: log_uniform_values}\n"
        "  algorithm.inner_steps: {min: 1, max: 5, distribution: int_uniform}\n"
        "  train.meta_batch_size: {values: [4, 8]}\n"
    )
    first, again = spec_sweep(BASE, spec), spec_sweep(BASE, spec)
    assert first.cells == again.cells and len(first.cells) == 6
    for cell in first.cells:
        assert 0.001 <= cell.values["algorithm.inner_lr"] <= 0.1
        assert cell.values["algorithm.inner_steps"] in range(1, 6)
    assert len(spec_sweep(BASE, spec, count=3).cells) == 3
    for _, config in first.resolved():
        assert config.algorithm.inner_steps >= 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("method: bayes\nparameters: {a.b: {values: [1]}}", "method 'bayes'"),
        ("method: grid\nparameters: {task.k_shot: {min: 1, max: 2}}", "has a range"),
        ("method: random\nparameters: {task.k_shot: {values: [1]}}", "run_cap"),
        ("parameters: {task.k_shot: {values: [1], q: 2}}", "'q'"),
        ("parameters: {task.k_shot: 3}", "must be a mapping"),
        ("parameters: {task.k_shot: {values: []}}", "non-empty list"),
        ("method: grid", "no `parameters`"),
        ("parameters: {task.k_shto: {values: [1, 2]}}", "k_shto"),
    ],
)
def test_bad_wandb_files_are_refused(tmp_path, text, message):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(text)
    with pytest.raises(ConfigError, match=message):
        spec_sweep(BASE, spec).resolved()


def test_run_name_is_a_stable_hash_of_what_is_learned():
    config = load_config(BASE)
    # pinned: the name of this run must not change when metagrad changes (a sweep run again
    # after an upgrade finds its runs); fields added with neutral defaults do not enter it
    assert identity(config) == "44136fa355b3"
    moved = load_config(BASE, ["task.data_root=/elsewhere", "train.device=cpu", "name=x"])
    assert identity(moved) == identity(config)
    assert identity(load_config(BASE, ["train.seed=1"])) != identity(config)
    code = (
        "from metagrad.config import load_config; from metagrad.sweeps.spec import identity; "
        f"print(identity(load_config({BASE!r})))"
    )
    other_process = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert other_process.stdout.strip() == identity(config)
