"""Meta-RL from the command line: `metagrad train`, `eval` and `plot` on the environments, with a
supervised run's guarantees (run folder, checkpoints, exact resume, clear errors)."""

import json

import pytest
import torch

from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore
from metagrad.cli import main
from metagrad.config import load_config, preset_names
from metagrad.rl import run as rl_run
from metagrad.train import fit

TINY = [
    "train.iterations=4",
    "train.meta_batch_size=3",
    "train.ckpt_every=2",
    "rl.rollouts=4",
    "rl.horizon=15",
    "model.hidden=[16]",
    "eval.num_tasks=5",
    "rl.eval_rollouts=4",
]


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def last_state(run_dir):
    return CheckpointStore(run_dir / CHECKPOINT_DIR).load("last")


def test_every_rl_preset_loads_with_the_papers_settings():
    names = [n for n in preset_names() if "-trpo-" in n or n.startswith("promp-")]
    assert len(names) == 16
    for name in names:
        config = load_config(name)
        assert config.is_rl and config.algorithm.inner_lr == 0.1
        assert config.algorithm.name == ("pretrain" if name.startswith("pretrain") else "maml")
        assert config.algorithm.first_order is name.startswith("fomaml")
        if name.startswith("promp-"):  # ProMP's run scripts
            assert config.train.meta_batch_size == 40 and config.rl.horizon == 100
            assert config.rl.outer == "ppo" and config.rl.inner_estimator == "lvc"
            continue
        assert config.rl.outer == "trpo" and config.rl.inner_estimator == "pg"
        assert config.train.meta_batch_size == (20 if "navigation" in name else 40)
        assert config.rl.horizon == (100 if "navigation" in name else 200)


def test_train_eval_and_plot_a_navigation_run(tmp_path, capsys):
    run = tmp_path / "nav"
    code, out, _ = cli(
        capsys, "train", "maml-trpo-navigation2d", "--run-dir", run, "--no-progress", "--set", *TINY
    )
    assert code == 0, out
    assert "building the navigation2d environment" in out and "iteration 4/4" in out
    assert "run's policy" in out and "random initial policy" in out
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert {"support_return", "query_return", "kl", "env_steps_per_s"} <= set(lines[0])
    best = CheckpointStore(run / CHECKPOINT_DIR).load("best")
    best_line = max(lines, key=lambda line: line["query_return"])
    assert best["best"]["step"] == best["step"] == best_line["step"] - 1  # θ of that iteration

    code, out, _ = cli(capsys, "eval", run, "--checkpoint", "last")
    assert code == 0 and "last checkpoint at iteration 4" in out
    result = json.loads((run / "eval-test-last-4episodes-3steps.json").read_text())
    assert result["num_tasks"] == 5 and result["inner_lr"] == [0.1, 0.05]
    for key in ("return", "random_init_return"):
        assert len(result["mean"][key]) == len(result["ci95"][key]) == 4
        assert all(value < 0 for value in result["mean"][key])  # −distance at every step

    code, _, err = cli(capsys, "eval", run, "--ensemble", "2")
    assert code == 2 and "a meta-RL run has one best policy" in err

    code, out, _ = cli(capsys, "plot", run)
    assert code == 0
    for figure in ("learning-curves", "metric-vs-steps", "trajectories"):
        assert (run / "plots" / f"{figure}.png").stat().st_size > 10_000, figure


def test_the_pretrained_baseline_is_a_run_of_its_own_plotted_beside_maml(tmp_path, capsys):
    runs = {}
    for kind in ("maml", "pretrain"):
        runs[kind] = tmp_path / kind
        code, out, _ = cli(
            capsys,
            "train",
            f"{kind}-trpo-navigation2d",
            "--run-dir",
            runs[kind],
            "--no-progress",
            "--set",
            *TINY,
        )
        assert code == 0, out
    maml, pretrained = (last_state(runs[k])["params"] for k in ("maml", "pretrain"))
    assert any(not torch.equal(maml[k], pretrained[k]) for k in maml)
    code, out, _ = cli(capsys, "plot", runs["maml"], runs["pretrain"], "--out", tmp_path / "both")
    assert code == 0 and (tmp_path / "both" / "metric-vs-steps.png").is_file()


@pytest.mark.parametrize("preset", ["maml-trpo-navigation2d", "promp-navigation2d"])
def test_resume_gives_the_uninterrupted_run_bit_for_bit(tmp_path, monkeypatch, preset):
    """A crash in the last of 4 iterations, after a checkpoint between two log lines (ProMP:
    with its Adam moments carried over)."""
    config = load_config(preset, [*TINY, "train.log_every=2", "train.ckpt_every=1"])
    whole = fit(config, tmp_path / "whole", progress=False)
    real = rl_run.train_maml

    def crash_at_the_last(*args, start, **kwargs):
        if start == 3:
            raise RuntimeError("simulated crash")
        return real(*args, start=start, **kwargs)

    monkeypatch.setattr(rl_run, "train_maml", crash_at_the_last)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(config, tmp_path / "split", progress=False)
    monkeypatch.setattr(rl_run, "train_maml", real)
    assert last_state(tmp_path / "split")["step"] == 3
    split = fit(config, tmp_path / "split", resume=True, progress=False)
    a, b = last_state(whole), last_state(split)
    assert a["step"] == b["step"] == 4 and a["best"] == b["best"]
    assert (a["outer_state"] is None) is (preset.startswith("maml"))
    for name in a["params"]:
        assert torch.equal(a["params"][name], b["params"][name]), name
    timings = ("env_steps_per_s", "seconds_per_iteration")
    logged = [
        [
            {k: v for k, v in json.loads(line).items() if k not in timings}
            for line in (run / "metrics.jsonl").read_text().splitlines()
        ]
        for run in (whole, split)
    ]
    assert logged[0] == logged[1] and [line["step"] for line in logged[0]] == [2, 4]


@pytest.mark.parametrize("preset", ["maml-trpo-halfcheetah-vel", "maml-trpo-ant-dir"])
def test_a_mujoco_run_trains_and_evaluates(tmp_path, capsys, preset):
    code, out, _ = cli(
        capsys,
        "train",
        preset,
        "--run-dir",
        tmp_path / "run",
        "--no-progress",
        "--set",
        *TINY,
        "train.iterations=1",
        "rl.horizon=5",
        "eval.num_tasks=2",
    )
    dataset = preset.removeprefix("maml-trpo-")
    assert code == 0 and f"building the {dataset} environment" in out
    assert "run's policy" in out


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("algorithm.name=reptile", "meta-trains with MAML (TRPO outer step) on an MLP policy"),
        ("train.strategy=loop", "train.strategy = 'loop' does not apply to reinforcement"),
        ("train.outer_lr=0.01", "train.outer_lr = 0.01 does not apply to reinforcement"),
        ("rl.gamma=1.5", "rl.gamma = 1.5 must be between 0 and 1"),
        ("rl.rollouts=0", "rl.rollouts = 0 must be > 0"),
        ("rl.outer=sgd", "rl.outer = 'sgd' is not allowed"),
        ("rl.ppo_clip=1.5", "rl.ppo_clip = 1.5 must be between 0 and 1"),
        ("rl.inner_kl_penalty=-1", "rl.inner_kl_penalty = -1.0 must be >= 0"),
        ("algorithm.name=pretrain rl.outer=ppo", "trained by TRPO without an inner loop"),
        ("task.dataset=navigation3d", "task.dataset = 'navigation3d' is not allowed"),
    ],
)
def test_bad_rl_settings_are_refused_before_any_folder(tmp_path, capsys, setting, message):
    code, _, err = cli(
        capsys,
        "train",
        "maml-trpo-navigation2d",
        "--run-dir",
        tmp_path / "r",
        "--set",
        *setting.split(),
    )
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "r").exists()
