"""`metagrad report`: a sweep's runs (or any runs) compared in a markdown file with figures.

What differs between the runs is found from their configs, so the same report serves a sweep
folder and a hand-picked list of run folders. Runs that differ only in `train.seed` are one
setting: its metric is the mean over seeds, its interval the 95% CI over seeds (over tasks when
there is one seed).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from metagrad.config import Config, flatten, load_config
from metagrad.errors import CheckpointError
from metagrad.execution.memory import format_size
from metagrad.logging import METRICS_FILE, read_metrics
from metagrad.plot import axis_label, latest_test_result, primary_metric, save_figure, shown
from metagrad.runs import saved_config
from metagrad.sweeps.folder import SweepFolder, run_measures
from metagrad.sweeps.spec import NOT_IDENTITY

SEED = "train.seed"


@dataclass(frozen=True)
class Entry:
    """One run of the report: its folder, config, summary row and evaluation."""

    name: str
    run: Path
    config: Config
    row: dict[str, Any]
    result: dict[str, Any] | None


def write_report(paths: Sequence[Path], out: Path) -> Path:
    """Write `out/report.md` and its PNGs for a sweep folder or run folders; returns the file."""
    entries = _entries(paths)
    metric = primary_metric(entries[0].config)
    if any(primary_metric(e.config) != metric for e in entries):
        raise CheckpointError(
            "these runs measure different things (regression, classification, returns) and "
            "cannot share a report; report them separately"
        )
    knobs = _varying(entries)
    try:
        out.mkdir(parents=True, exist_ok=True)
        figures = [
            _plot_knobs(entries, knobs, metric, out / "metric-vs-settings.png"),
            _plot_steps(entries, knobs, metric, out / "pre-post-steps.png"),
            _plot_curves(entries, knobs, metric, out / "learning-curves.png"),
            _plot_cost(entries, knobs, out / "time-and-memory.png"),
        ]
        path = out / "report.md"
        path.write_text(_markdown(paths, entries, knobs, metric, [f for f in figures if f]))
    except OSError as err:
        raise CheckpointError(
            f"cannot write the report in {out}: {err.strerror or err}; the runs are unchanged. "
            "Pass --out with a writable folder"
        ) from err
    return path


def _entries(paths: Sequence[Path]) -> list[Entry]:
    if len(paths) == 1 and SweepFolder(paths[0]).is_sweep():
        folder = SweepFolder(paths[0])
        entries = []
        for row in folder.rows():
            outcome = folder.outcome(row["cell"])
            config = load_config(folder.config(row["cell"]))
            result = _read(outcome.get("result"))
            entries.append(Entry(row["cell"], folder.run(row["cell"]), config, row, result))
        if not entries:
            raise CheckpointError(f"sweep folder {paths[0]} has no runs yet; run the sweep first")
        return entries
    entries = []
    for run in paths:
        config = saved_config(run)
        found = latest_test_result(run)
        row = {"status": "finished" if found else "trained", "run": str(run)}
        row |= run_measures(run, found, primary_metric(config))
        entries.append(Entry(run.name, run, config, row, _read(found)))
    return entries


def _read(path: str | Path | None) -> dict[str, Any] | None:
    return json.loads(Path(path).read_text()) if path and Path(path).is_file() else None


def _varying(entries: list[Entry]) -> list[str]:
    """The config fields whose values differ between the runs (what was swept)."""
    flats = [flatten(e.config.to_dict()) for e in entries]
    keys = dict.fromkeys(k for flat in flats for k in flat)
    return [
        key
        for key in keys
        if not any(key == f or key.startswith(f + ".") for f in NOT_IDENTITY)
        and len({json.dumps(flat.get(key)) for flat in flats}) > 1
    ]


def _label(entry: Entry, knobs: list[str]) -> str:
    flat = flatten(entry.config.to_dict())
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={_value(flat.get(k))}" for k in knobs) or entry.name


def _value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _settings(entries: list[Entry], knobs: list[str]) -> dict[tuple, list[Entry]]:
    """Finished runs grouped by their values of every knob but the seed."""
    groups: dict[tuple, list[Entry]] = {}
    for entry in entries:
        if "post" not in entry.row:
            continue
        flat = flatten(entry.config.to_dict())
        key = tuple(_value(flat.get(k)) for k in knobs if k != SEED)
        groups.setdefault(key, []).append(entry)
    return groups


def _mean_ci(group: list[Entry], metric: str) -> tuple[float, float]:
    """The metric after adaptation: over seeds when there are several, else over tasks."""
    values = [shown(metric, e.row["post"]) for e in group]
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, shown(metric, group[0].row["post_ci95"])
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return mean, 1.96 * std / math.sqrt(len(values))


def _plot_knobs(entries: list[Entry], knobs: list[str], metric: str, path: Path) -> Path | None:
    """The final test metric against each swept setting: one panel per setting, a point per
    combination of the others (mean ± 95% CI), the mean over them as a line."""
    shown_knobs = [k for k in knobs if k != SEED]
    groups = _settings(entries, knobs)
    if not shown_knobs or not groups:
        return None
    fig = Figure(figsize=(4.2 * len(shown_knobs), 3.8))
    axes = fig.subplots(1, len(shown_knobs), squeeze=False, sharey=True)[0]
    for ax, knob in zip(axes, shown_knobs, strict=True):
        position = shown_knobs.index(knob)
        values = sorted({key[position] for key in groups}, key=_order)
        by_value: dict[str, list[float]] = {v: [] for v in values}
        for key, group in groups.items():
            mean, ci = _mean_ci(group, metric)
            x = values.index(key[position])
            offset = (zlib.crc32(repr(key).encode()) % 7 - 3) * 0.03  # keeps points apart
            ax.errorbar(x + offset, mean, yerr=ci, fmt="o", color="C0", alpha=0.6, capsize=3)
            by_value[key[position]].append(mean)
        means = [sum(v) / len(v) for v in by_value.values()]
        ax.plot(range(len(values)), means, "-", color="C3", label="mean over the other settings")
        ax.set_xticks(range(len(values)), values)
        ax.set_xlabel(knob)
        ax.grid(alpha=0.3)
    steps = entries[0].row.get("eval_steps")
    axes[0].set_ylabel(f"test {axis_label(metric)} after {steps} steps")
    axes[0].legend(fontsize=8)
    seeds = max(len(g) for g in groups.values())
    fig.suptitle(
        "final test metric per setting (mean ± 95% CI "
        + ("over seeds)" if seeds > 1 else "over test tasks)")
    )
    return save_figure(fig, path)


def _order(value: str) -> tuple:
    """Numbers in numeric order, then anything else by text."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def _plot_steps(entries: list[Entry], knobs: list[str], metric: str, path: Path) -> Path | None:
    """Test metric before adaptation (step 0) and after every inner step, one line per run."""
    evaluated = [e for e in entries if e.result and metric in e.result["mean"]]
    if not evaluated:
        return None
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    for color, entry in enumerate(evaluated):
        mean = [shown(metric, v) for v in entry.result["mean"][metric]]
        ci = [shown(metric, v) for v in entry.result["ci95"][metric]]
        steps = range(len(mean))
        ax.plot(steps, mean, "-o", markersize=3, color=f"C{color % 10}", label=_label(entry, knobs))
        ax.fill_between(
            steps,
            [m - c for m, c in zip(mean, ci, strict=True)],
            [m + c for m, c in zip(mean, ci, strict=True)],
            color=f"C{color % 10}",
            alpha=0.12,
        )
    ax.set_xlabel("inner steps at test time (0 = before adaptation)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"test {axis_label(metric)}")
    ax.set_title("test tasks: mean ± 95% CI over tasks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_figure(fig, path)


def _plot_curves(entries: list[Entry], knobs: list[str], metric: str, path: Path) -> Path | None:
    """Validation metric after adaptation and training loss against the outer step."""
    logged = [
        (e, read_metrics(e.run / METRICS_FILE)) for e in entries if (e.run / METRICS_FILE).is_file()
    ]
    if not logged:
        return None
    fig = Figure(figsize=(12, 4.5))
    val_ax, loss_ax = fig.subplots(1, 2)
    for color, (entry, lines) in enumerate(logged):
        style = {"color": f"C{color % 10}", "label": _label(entry, knobs)}
        for ax, split, key in ((val_ax, "val", f"post_{metric}"), (loss_ax, "train", "loss")):
            points = [(r["step"], r[key]) for r in lines if r["split"] == split and key in r]
            if points:
                steps, values = zip(*points, strict=True)
                shown_values = [shown(metric, v) for v in values] if ax is val_ax else values
                ax.plot(steps, shown_values, "-", marker="o" if len(points) == 1 else None, **style)
    val_ax.set_ylabel(f"validation {axis_label(metric)} after adaptation")
    loss_ax.set_ylabel("training loss (query set, after adaptation)")
    for ax in (val_ax, loss_ax):
        ax.set_xlabel("outer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    losses = [y for line in loss_ax.get_lines() for y in line.get_ydata()]
    if losses and min(losses) > 0:  # one spike would flatten every other curve
        loss_ax.set_yscale("log")
    loss_ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("learning curves")
    return save_figure(fig, path)


def _plot_cost(entries: list[Entry], knobs: list[str], path: Path) -> Path | None:
    """Seconds per outer step and peak memory of each run, as bars."""
    measured = [e for e in entries if e.row.get("seconds_per_step") or e.row.get("peak_memory")]
    if not measured:
        return None
    fig = Figure(figsize=(12, 0.9 + 0.35 * len(measured)))
    time_ax, memory_ax = fig.subplots(1, 2, sharey=True)
    positions = range(len(measured))
    time_ax.barh(positions, [e.row.get("seconds_per_step") or 0 for e in measured], color="C0")
    memory = [
        (e.row.get("peak_memory") or e.row.get("needed_memory") or 0) / 2**20 for e in measured
    ]
    colors = ["C3" if e.row["status"] == "skipped" else "C1" for e in measured]
    memory_ax.barh(positions, memory, color=colors)
    time_ax.set_yticks(list(positions), [_label(e, knobs) for e in measured], fontsize=7)
    time_ax.set_xlabel("seconds per outer step (training)")
    memory_ax.set_xlabel("peak memory of the run (MiB; red: needed, did not fit)")
    for ax in (time_ax, memory_ax):
        ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path)


def _markdown(
    paths: Sequence[Path], entries: list[Entry], knobs: list[str], metric: str, figures: list[Path]
) -> str:
    steps = entries[0].row.get("eval_steps")
    lines = [
        f"# Report: {', '.join(str(p) for p in paths)}",
        "",
        f"{len(entries)} runs of `{entries[0].config.name}`; what differs between them: "
        + (", ".join(f"`{k}`" for k in knobs) or "nothing")
        + f". Test {metric} before adaptation and after {steps} inner steps, mean ± 95% CI "
        "over the test tasks.",
        "",
        "| run | " + " | ".join(knobs) + f" | status | before | after {steps} steps | outer "
        "steps | training s | s/step | peak memory |",
        "|" + " --- |" * (len(knobs) + 8),
    ]
    for entry in entries:
        flat = flatten(entry.config.to_dict())
        row = entry.row
        cells = [entry.name, *(_value(flat.get(k)) for k in knobs), row["status"]]
        if "post" in row:
            cells += [
                f"{shown(metric, row['pre']):.4g}",
                f"{shown(metric, row['post']):.4g} ± {shown(metric, row['post_ci95']):.2g}",
            ]
        else:
            cells += ["", row.get("message") or ""]
        cells += [
            str(row.get("steps", "")),
            f"{row['train_seconds']:.0f}" if row.get("train_seconds") is not None else "",
            f"{row['seconds_per_step']:.3g}" if row.get("seconds_per_step") else "",
            _memory(row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    groups = _settings(entries, knobs)
    if any(len(g) > 1 for g in groups.values()):
        lines += ["", f"Over seeds ({SEED}), after {steps} steps:", ""]
        lines += [
            "| " + " | ".join([*(k for k in knobs if k != SEED), "seeds", "mean ± 95% CI"]) + " |"
        ]
        lines += ["|" + " --- |" * (len([k for k in knobs if k != SEED]) + 2)]
        for key, group in groups.items():
            mean, ci = _mean_ci(group, metric)
            lines.append(
                "| " + " | ".join([*key, str(len(group)), f"{mean:.4g} ± {ci:.2g}"]) + " |"
            )
    for figure in figures:
        lines += ["", f"![{figure.stem}]({figure.name})"]
    return "\n".join(lines) + "\n"


def _memory(row: dict[str, Any]) -> str:
    if row.get("peak_memory"):
        return format_size(row["peak_memory"])
    if row.get("needed_memory"):
        return f"needs {format_size(row['needed_memory'])}"
    return ""
