"""Meta-training on the real Omniglot: a short CPU budget must beat chance by a wide margin."""

import pytest

from metagrad.build import build_tasks
from metagrad.config import load_config
from metagrad.errors import ConfigError
from metagrad.evaluate import evaluate_run
from metagrad.train import fit


def test_a_short_maml_run_on_real_omniglot_beats_chance_by_far(tmp_path, omniglot_root):
    config = load_config(
        "maml-omniglot-5w1s",
        [
            f"task.data_root={omniglot_root}",
            "train.iterations=150",
            "train.val_every=150",
            "train.val_tasks=50",
            "eval.num_tasks=100",
        ],
    )
    result = evaluate_run(fit(config, tmp_path / "run", progress=False))
    accuracy = result["mean"]["accuracy"]
    assert accuracy[0] < 0.3, "before adaptation a 5-way classifier is at chance"
    assert accuracy[-1] >= 0.6, accuracy  # chance is 0.2


def test_evaluation_shapes_name_the_eval_fields(omniglot_root):
    config = load_config(
        "maml-omniglot-5w1s", [f"task.data_root={omniglot_root}", "eval.n_query=100"]
    )
    with pytest.raises(ConfigError, match=r"eval.n_query = 100 .* at most 19"):
        build_tasks(config, evaluation=True)


@pytest.mark.parametrize(
    ("preset", "floor"),
    [("protonets-omniglot-5w1s", 0.7), ("baselinepp-omniglot-5w1s", 0.45)],
)
def test_short_runs_of_the_baselines_on_real_omniglot_beat_chance_by_far(
    tmp_path, omniglot_root, preset, floor
):
    """Prototypical Networks trains on 20-way tasks here (60 in the preset) and is tested on
    5-way ones; Baseline++ pre-trains one classifier over the 4400 training classes."""
    config = load_config(
        preset,
        [
            f"task.data_root={omniglot_root}",
            "task.n_way=20",
            "train.iterations=150",
            "train.val_every=150",
            "train.val_tasks=50",
            "eval.num_tasks=100",
            "eval.inner_steps=10",
        ],
    )
    accuracy = evaluate_run(fit(config, tmp_path / "run", progress=False))["mean"]["accuracy"]
    assert accuracy[-1] >= floor, accuracy  # chance is 0.2
