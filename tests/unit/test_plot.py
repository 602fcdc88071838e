"""Figures show what they claim: one-point curves, integer steps, accuracy in percent, the shots;
runs that measure different things are not mixed."""

import json
import os

import pytest

from metagrad import plot
from metagrad.config import dump_yaml, load_config
from metagrad.errors import CheckpointError
from metagrad.runs import MARKER_FILE


def fake_run(folder, preset, lines):
    """A run folder with a config and a metrics file, as training leaves them."""
    folder.mkdir()
    (folder / MARKER_FILE).write_text("{}\n")
    (folder / "config.yaml").write_text(dump_yaml(load_config(preset)))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


@pytest.fixture
def figures(monkeypatch):
    drawn = []
    monkeypatch.setattr(plot, "save_figure", lambda fig, path: drawn.append(fig) or path)
    return drawn


def omniglot_run(tmp_path, steps=(5,)):
    lines = [{"step": s, "split": "val", "pre_accuracy": 0.2, "post_accuracy": 0.5} for s in steps]
    return fake_run(tmp_path / "omniglot", "maml-omniglot-5w1s", lines)


def test_a_curve_of_one_point_is_drawn_with_a_marker(tmp_path, figures):
    plot.plot_learning_curves([omniglot_run(tmp_path)], tmp_path / "curves.png")
    lines = figures[0].axes[1].get_lines()
    assert lines and all(line.get_marker() == "o" for line in lines)


def test_steps_are_integers_and_accuracy_is_in_percent(tmp_path, figures):
    plot.plot_learning_curves([omniglot_run(tmp_path, steps=(1, 2))], tmp_path / "curves.png")
    ax = figures[0].axes[1]
    assert ax.get_ylabel() == "accuracy (%)"
    assert sorted(y for line in ax.get_lines() for y in line.get_ydata()) == [20, 20, 50, 50]
    ax.figure.canvas.draw()
    assert all(tick == int(tick) for tick in ax.get_xticks())


def test_regression_and_classification_runs_are_not_mixed(tmp_path):
    sinusoid = fake_run(tmp_path / "sinusoid", "maml-sinusoid-5shot", [])
    omniglot = omniglot_run(tmp_path)
    for runs in ([sinusoid, omniglot], [omniglot, sinusoid]):
        with pytest.raises(CheckpointError, match="measure different things"):
            plot.plot_runs(runs, tmp_path / "plots")
    assert not (tmp_path / "plots").exists()


def test_the_metric_figure_uses_the_newest_test_result_and_names_the_shots(tmp_path, figures):
    run = omniglot_run(tmp_path)
    for age, shots in enumerate((5, 1)):
        result = {"num_tasks": 3, "k_shot": shots, "mean": {"accuracy": [0.2, 0.4, 0.6]}}
        path = run / f"eval-test-best-{shots}shot-2steps.json"
        path.write_text(json.dumps({**result, "ci95": {"accuracy": [0.0, 0.1, 0.1]}}))
        os.utime(path, (1e9 - age, 1e9 - age))
    assert plot.latest_test_result(run).name == "eval-test-best-5shot-2steps.json"
    plot.plot_metric_vs_steps([run], tmp_path / "metric.png")
    ax = figures[0].axes[0]
    assert "5-shot" in ax.get_title() and ax.get_ylabel() == "accuracy (%)"
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([20, 40, 60])
