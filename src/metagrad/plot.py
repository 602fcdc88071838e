"""Figures people look at: learning curves, metric vs inner steps, sinusoid fits (MAML Fig. 2)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from metagrad.build import build_tasks, objective_for
from metagrad.config import Config, load_config
from metagrad.errors import CheckpointError
from metagrad.evaluate import load_learner, read_checkpoint
from metagrad.logging import METRICS_FILE, read_metrics
from metagrad.rl.run import trajectories
from metagrad.runs import saved_config


def plot_runs(runs: list[Path], out_dir: Path) -> list[Path]:
    """Every figure that applies to `runs` (the first is the main one), as PNGs in `out_dir`."""
    configs = [saved_config(run) for run in runs]
    check_comparable(runs, configs)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [plot_learning_curves(runs, out_dir / "learning-curves.png")]
        if all(latest_test_result(run) for run in runs):
            written.append(plot_metric_vs_steps(runs, out_dir / "metric-vs-steps.png"))
        if configs[0].task.dataset == "sinusoid":
            written.append(plot_sinusoid_fits(runs, out_dir / "sinusoid-fits.png"))
        if configs[0].task.dataset == "navigation2d":
            written.append(plot_trajectories(runs[0], out_dir / "trajectories.png"))
    except OSError as err:
        raise CheckpointError(
            f"cannot write the figures in {out_dir}: {err.strerror or err}; the runs are "
            "unchanged. Pass --out with a writable folder"
        ) from err
    return written


def check_comparable(runs: list[Path], configs: list[Config]) -> None:
    """Runs share figures only when they measure the same thing (regression or classification)."""
    kinds = {primary_metric(config): run for run, config in zip(runs, configs, strict=True)}
    if len(kinds) > 1:
        described = ", ".join(f"{run} ({metric})" for metric, run in kinds.items())
        raise CheckpointError(
            f"these runs measure different things and cannot share a figure: {described}; plot "
            "regression, classification and reinforcement-learning runs separately"
        )


def primary_metric(config: Config) -> str:
    """What the figures show: the return for meta-RL, else the objective's primary metric."""
    return "return" if config.is_rl else objective_for(config).primary


def latest_test_result(run: Path) -> Path | None:
    """The newest saved evaluation on test tasks (`metagrad eval`, or the one after training)."""
    found = sorted(run.glob("eval-test*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    return found[-1] if found else None


CURVES = {
    "train": [
        ("support", ":", "θ, support set"),
        ("query", "-", "φ, query set"),
        ("train", "-", "θ, all examples"),
    ],
    "val": [("pre", ":", "before adaptation"), ("post", "-", "after adaptation")],
}
"""Metric prefixes per split, with their line styles and legend labels."""


def plot_learning_curves(runs: list[Path], path: Path) -> Path:
    """The primary metric vs outer step. Training tasks: θ on the support set before adaptation,
    φ on the query set after it (pre-training: θ on every example). Validation tasks: the query
    set before and after the test-time adaptation."""
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for color, run in enumerate(runs):
        file = run / METRICS_FILE
        if not file.is_file():
            raise CheckpointError(f"{run} has no {METRICS_FILE}; is it a run folder?")
        primary = primary_metric(load_config(run / "config.yaml"))
        lines = read_metrics(file)
        for ax, split in zip(axes, ("train", "val"), strict=True):
            rows = [r for r in lines if r["split"] == split]
            for stage, style, label in CURVES[split]:
                key = f"{stage}_{primary}"
                points = [(r["step"], r[key]) for r in rows if key in r]
                if points:
                    steps, values = zip(*points, strict=True)
                    ax.plot(
                        steps,
                        [shown(primary, v) for v in values],
                        style,
                        marker="o" if len(points) == 1 else None,  # one point draws no line
                        color=f"C{color}",
                        label=f"{run.name} {label}",
                    )
            ax.set_title(f"{split} tasks")
            ax.set_xlabel("outer step")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(axis_label(primary))
            ax.grid(alpha=0.3)
    labelled = [ax for ax in axes if ax.get_legend_handles_labels()[0]]
    if labelled:
        labelled[0].legend(fontsize=8)
    return save_figure(fig, path)


def plot_metric_vs_steps(runs: list[Path], path: Path) -> Path:
    """The evaluated metric (mean ± 95% CI) after each inner step, one line per run."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for run in runs:
        result = json.loads(latest_test_result(run).read_text())
        primary = primary_metric(load_config(run / "config.yaml"))
        shots = f", {result['k_shot']}-shot" if "k_shot" in result else ""
        lines = [(primary, "-", f"{run.name}{shots}")]
        if "random_init_return" in result["mean"] and run == runs[0]:  # meta-RL: the paper's
            lines.append(("random_init_return", "--", "random initial policy"))  # baseline
        for key, style, label in lines:
            mean = torch.tensor([shown(primary, v) for v in result["mean"][key]])
            ci = torch.tensor([shown(primary, v) for v in result["ci95"][key]])
            steps = range(len(mean))
            ax.plot(steps, mean, style, marker="o", label=label)
            ax.fill_between(steps, mean - ci, mean + ci, alpha=0.2)
    steps_of = "policy-gradient" if primary == "return" else "inner (fine-tuning)"
    ax.set_xlabel(f"{steps_of} steps at test time")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(axis_label(primary))
    ax.set_title(f"test tasks ({result['num_tasks']}){shots}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_sinusoid_fits(
    runs: list[Path], path: Path, num_tasks: int = 3, shown_steps: tuple[int, ...] = (0, 1, 10)
) -> Path:
    """MAML paper Figure 2: true curve, the K support points and the fit after a few steps."""
    fig = Figure(figsize=(4.5 * len(runs), 3 * num_tasks))
    axes = fig.subplots(num_tasks, len(runs), squeeze=False)
    x_grid = torch.linspace(-5, 5, 200).unsqueeze(-1)
    for column, run in enumerate(runs):
        config = load_config(run / "config.yaml")
        tasks = build_tasks(config, evaluation=True)
        for row in range(num_tasks):
            batch = tasks.sample("test", row, 1)
            amplitude, phase = tasks.functions("test", row, 1)
            fits = _fits(run, config, batch, x_grid, max(shown_steps))
            ax = axes[row][column]
            ax.plot(x_grid, amplitude * torch.sin(x_grid - phase), "r", label="ground truth")
            for step in shown_steps:
                ax.plot(x_grid, fits[step], "--", label=f"after {step} steps")
            ax.plot(batch.x_support[0], batch.y_support[0], "k^", label="support points")
            if row == 0:
                ax.set_title(f"{run.name} (K={batch.x_support.shape[1]})")
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, path)


def _fits(run: Path, config, batch, x_grid: torch.Tensor, steps: int) -> torch.Tensor:
    """The run's predictions on `x_grid` after 0..`steps` inner steps on the task's support set,
    adapted as the run's algorithm adapts at test time."""
    learner = load_learner(config, read_checkpoint(run, "best"), "cpu")
    network, algorithm = learner.network.task_learner(), learner.algorithm
    meta = learner.meta.detached()
    x_support, y_support = batch.x_support[0], batch.y_support[0]

    predict = algorithm.predictor(network, meta, x_support, y_support, x_grid)

    def observe(fast):
        return {"y": predict(fast)[..., 0]}

    adaptation = algorithm.adapt_for_test(
        network, meta, x_support, y_support, steps=steps, lr=config.eval.inner_lr, observe=observe
    )
    return adaptation.observations["y"].detach()


def shown(metric: str, value: float) -> float:
    """A value as the figures show it: accuracy in percent."""
    return 100 * value if metric == "accuracy" else value


def plot_trajectories(run: Path, path: Path, num_tasks: int = 4) -> Path:
    """2D navigation, the MAML paper's Figure 6: one episode of the run's best policy before
    adaptation and after each policy-gradient step, on a few test tasks, the goal marked."""
    config = load_config(run / "config.yaml")
    goals, positions = trajectories(config, read_checkpoint(run, "best")["params"], num_tasks)
    fig = Figure(figsize=(3.6 * num_tasks, 3.6))
    axes = fig.subplots(1, num_tasks, squeeze=False)[0]
    for task, ax in enumerate(axes):
        for step, episode in enumerate(positions):
            label = "before adaptation" if step == 0 else f"after {step} step{'s' * (step > 1)}"
            ax.plot(*episode[task].T, "-", linewidth=1.2, label=label, color=f"C{step}")
        ax.plot(*positions[0][task, 0], "ko", markersize=4, label="start")
        ax.plot(*goals[task], "r*", markersize=14, label="goal")
        ax.set_title(f"test task {task}")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return save_figure(fig, path)


def axis_label(metric: str) -> str:
    return {"accuracy": "accuracy (%)", "return": "average return"}.get(metric, metric)


def save_figure(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
