"""The `metagrad` command: train | eval | tasks | plot | sweep | report | data | bench | config."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from metagrad import __version__
from metagrad.errors import CheckpointError, ConfigError, MetagradError
from metagrad.execution.allocator import tune_allocator
from metagrad.execution.distributed import launched, world


def main(argv: Sequence[str] | None = None) -> int:
    tune_allocator()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except MetagradError as err:
        if world().is_main or not err.shared:
            print(f"metagrad: error: {err}", file=sys.stderr)
        return err.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metagrad",
        description="Gradient-based meta-learning: MAML, first-order MAML, Reptile.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(required=True, metavar="command")

    train = commands.add_parser("train", help="meta-train a preset or a YAML config")
    train.add_argument(
        "config", nargs="?", help="preset name (see `metagrad config list`) or YAML file"
    )
    _add_overrides(train)
    train.add_argument("--run-dir", type=Path, help="run folder (default: runs/<preset name>)")
    train.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="RUN",
        help="continue a run from its newest complete checkpoint: the folder RUN, or --run-dir "
        "(the config may then be left out; fields that change what is learned must not change)",
    )
    train.add_argument("--overwrite", action="store_true", help="replace the run in --run-dir")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument(
        "--time-budget",
        type=_duration,
        help="stop after this much training time: 900, 15m, 1h. It counts the outer steps only: "
        "loading data, choosing the execution strategy, validation and the final evaluation "
        "come on top (sets train.time_budget)",
    )
    train.add_argument("--data-root", help="dataset folder (sets task.data_root)")
    train.add_argument(
        "--max-memory",
        help="memory budget, e.g. 8GiB: picks the fastest strategy, chunk size and inner-step "
        "checkpointing that fit (sets train.max_memory)",
    )
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("eval", help="evaluate a run on fixed test tasks")
    evaluate.add_argument("run", type=Path, help="run folder")
    evaluate.add_argument(
        "--checkpoint",
        default="best",
        help="best | last | time-<seconds>s | a .pt file (default: best)",
    )
    evaluate.add_argument(
        "--split", choices=["test", "val"], help="default: test, or the split of --tasks"
    )
    evaluate.add_argument(
        "--ensemble",
        type=_positive,
        default=1,
        metavar="K",
        help="evaluate the K best validation checkpoints together, their predicted "
        "probabilities averaged (the run must keep them: train.keep_best >= K)",
    )
    evaluate.add_argument(
        "--tasks",
        type=Path,
        metavar="FILE",
        help="evaluate on the tasks of FILE (`metagrad tasks export`) instead of drawing "
        "eval.num_tasks; a changed file or one of other tasks is refused",
    )
    _add_overrides(evaluate, example="eval.num_tasks=1000 eval.inner_lr=0.02")
    evaluate.set_defaults(handler=_eval)

    tasks = commands.add_parser(
        "tasks", help="fixed evaluation tasks as a file, to evaluate runs or other code on"
    )
    tasks_commands = tasks.add_subparsers(required=True, metavar="action")
    export = tasks_commands.add_parser(
        "export",
        help="write the tasks `metagrad eval` draws: class names and example indices of image "
        "episodes, the tensors of other tasks, and their content hash",
    )
    export.add_argument("config", help="preset name, YAML file, or a run's config.yaml")
    export.add_argument("--split", default="test", choices=["test", "val"])
    export.add_argument(
        "--num", type=_positive, help="tasks 0..NUM-1 of the split (default: eval.num_tasks)"
    )
    export.add_argument("-o", "--out", type=Path, required=True, help="file to write: tasks.pt")
    export.add_argument("--data-root", help="dataset folder (sets task.data_root)")
    _add_overrides(export, example="eval.k_shot=1 eval.n_query=15")
    export.set_defaults(handler=_tasks_export)

    plot = commands.add_parser("plot", help="figures of one run, or of several side by side")
    plot.add_argument("runs", type=Path, nargs="+", help="run folders (the first is the main one)")
    plot.add_argument("--out", type=Path, help="output folder (default: <first run>/plots)")
    plot.set_defaults(handler=_plot)

    data = commands.add_parser("data", help="fetch, verify and prepare a dataset; print a summary")
    data.add_argument(
        "dataset", choices=["omniglot", "miniimagenet", "tieredimagenet", "cifarfs", "fc100"]
    )
    data.add_argument(
        "--root", help="dataset folder (default: $METAGRAD_DATA or ~/.cache/metagrad)"
    )
    data.add_argument(
        "--download",
        action="store_true",
        help="download missing official archives (omniglot; CIFAR-100 for cifarfs and fc100)",
    )
    data.set_defaults(handler=_data)

    bench = commands.add_parser(
        "bench",
        help="time and memory of one meta-step: metagrad's strategies against learn2learn, "
        "higher, torchopt and parallel-metalearn",
    )
    bench.add_argument(
        "settings", nargs="*", metavar="SETTING", help="benchmark settings (default: all; --list)"
    )
    bench.add_argument("--list", action="store_true", help="list the settings and approaches")
    bench.add_argument(
        "--approach",
        dest="approaches",
        nargs="+",
        help="approaches to run (default: all); a strategy may take a chunk size: hybrid/8",
    )
    bench.add_argument("--repeats", type=int, default=10, help="timed meta-steps (median)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed meta-steps first")
    bench.add_argument("--device", default="cpu", help="cpu or cuda")
    bench.add_argument(
        "--sweep",
        metavar="KEY=V1,V2,...",
        help="repeat every setting for each value of one config field, e.g. "
        "train.meta_batch_size=8,16,32,64",
    )
    bench.add_argument(
        "--allocator",
        choices=["tuned", "default"],
        default="tuned",
        help="glibc malloc as metagrad sets it (tuned) or untouched (default), for every approach",
    )
    bench.add_argument("--out", type=Path, help="also write every measurement as JSON lines")
    bench.add_argument(
        "--no-check", action="store_true", help="skip the float64 meta-gradient check (sweeps)"
    )
    _add_overrides(bench)
    bench.set_defaults(handler=_bench)

    sweep = commands.add_parser(
        "sweep",
        help="train and evaluate a grid of runs, skipping finished ones; summary.csv",
        description="Train and evaluate every combination of the swept values, each run in a "
        "folder named by the hash of its config: running the same sweep again skips finished "
        "runs and resumes interrupted ones.",
    )
    sweep.add_argument("config", help="preset name (see `metagrad config list`) or YAML file")
    sweep.add_argument(
        "axes",
        nargs="*",
        metavar="KEY=V1,V2,...",
        help="swept config fields, comma lists (brackets keep a list whole: "
        "model.hidden=[32],[64]); a single value sets the field for every run",
    )
    sweep.add_argument(
        "--spec",
        type=Path,
        help="a W&B sweep file (method grid or random, parameters.<key>.values, metric)",
    )
    sweep.add_argument(
        "--count", type=_positive, help="runs of a random --spec sweep (else its run_cap)"
    )
    sweep.add_argument("--out", type=Path, help="sweep folder (default: sweeps/<config name>)")
    sweep.add_argument(
        "--jobs", type=_positive, default=1, help="runs at a time, each its own process"
    )
    sweep.add_argument(
        "--nproc-per-node",
        type=_positive,
        default=1,
        metavar="P",
        help="run each cell as a torchrun group of P processes (one GPU each on GPUs)",
    )
    sweep.add_argument(
        "--max-memory",
        help="memory budget of every run, e.g. 8GiB: the planner picks chunking and "
        "checkpointing to fit; a run that cannot fit is recorded as skipped with its need",
    )
    sweep.add_argument(
        "--wandb",
        metavar="PROJECT",
        help="also log each finished run to this W&B project, the sweep folder's name as the "
        "group (the wandb extra; WANDB_MODE=offline works without a network)",
    )
    sweep.add_argument("--data-root", help="dataset folder (sets task.data_root)")
    sweep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_overrides(sweep)
    sweep.set_defaults(handler=_sweep)

    report = commands.add_parser(
        "report", help="a markdown report with figures comparing a sweep's runs, or given runs"
    )
    report.add_argument("runs", type=Path, nargs="+", help="a sweep folder, or run folders")
    report.add_argument("--out", type=Path, help="output folder (default: <first>/report)")
    report.set_defaults(handler=_report)

    config = commands.add_parser("config", help="list presets or show a resolved config")
    config_commands = config.add_subparsers(required=True, metavar="action")
    config_commands.add_parser("list", help="list the built-in presets").set_defaults(
        handler=_config_list
    )
    show = config_commands.add_parser("show", help="print a config after overrides")
    show.add_argument("config", help="preset name or YAML file")
    _add_overrides(show)
    show.set_defaults(handler=_config_show)
    return parser


def _add_overrides(parser: argparse.ArgumentParser, example: str = "train.iterations=1000") -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        default=[],
        help=f"override config fields, e.g. --set {example}",
    )


def _duration(text: str) -> float:
    """Seconds from `900`, `900s`, `15m` or `1.5h`."""
    units = {"s": 1, "m": 60, "h": 3600}
    scale = units.get(text[-1:], 1)
    try:
        return float(text[:-1] if text[-1:] in units else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; write e.g. 900, 15m or 1h"
        ) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number; write e.g. 5")
    return value


def _train(args: argparse.Namespace) -> int:
    from metagrad.config import load_config
    from metagrad.evaluate import evaluate_run, format_summary
    from metagrad.train import fit

    overrides = list(args.overrides)
    if args.time_budget is not None:
        overrides.append(f"train.time_budget={args.time_budget}")
    if args.data_root is not None:
        overrides.append(f"task.data_root={args.data_root}")
    if args.max_memory is not None:
        overrides.append(f"train.max_memory={args.max_memory}")
    resume = args.resume is not None
    run_dir = Path(args.resume) if args.resume else args.run_dir
    if args.config is None and not run_dir:
        raise ConfigError("give a preset or config file to train, or --resume RUN to continue one")
    if args.config is None and not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"--resume {run_dir}: not a run folder (it has no config.yaml)")
    config = load_config(args.config or run_dir / "config.yaml", overrides)
    run_dir = run_dir or Path("runs") / config.name
    fit(config, run_dir, resume=resume, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"run saved in {run_dir}; evaluating the best checkpoint on test tasks")
    print(format_summary(evaluate_run(run_dir)))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from metagrad.evaluate import evaluate_run, format_summary

    result = evaluate_run(
        args.run,
        checkpoint=args.checkpoint,
        split=args.split,
        overrides=args.overrides,
        ensemble=args.ensemble,
        tasks=args.tasks,
    )
    print(format_summary(result))
    print(f"saved {result['saved_to']}")
    return 0


def _tasks_export(args: argparse.Namespace) -> int:
    from metagrad.config import load_config
    from metagrad.tasks.frozen import export_tasks

    overrides = list(args.overrides)
    if args.data_root is not None:
        overrides.append(f"task.data_root={args.data_root}")
    config = load_config(args.config, overrides)
    tasks = export_tasks(config, args.split, args.num or config.eval.num_tasks, args.out)
    print(f"wrote {args.out}: {tasks.describe()}")
    print(f"sha256 {tasks.sha256}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from metagrad.plot import plot_runs

    for path in plot_runs(args.runs, args.out or args.runs[0] / "plots"):
        print(f"wrote {path}")
    return 0


def _data(args: argparse.Namespace) -> int:
    if args.dataset == "omniglot":
        from metagrad.data.omniglot import load_omniglot, summary

        print(summary(load_omniglot(args.root, download=args.download)))
        return 0
    from metagrad.data.natural import prepare, summary

    print(summary(args.dataset, prepare(args.dataset, args.root, download=args.download)))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from metagrad.bench.runner import APPROACHES, available, format_table, run_setting
    from metagrad.bench.settings import SETTINGS

    if args.list:
        for name, setting in SETTINGS.items():
            print(f"{name:20} {setting.about} (preset {setting.preset})")
        print("approaches: " + ", ".join(APPROACHES))
        return 0
    unknown = [name for name in args.settings if name not in SETTINGS]
    if unknown:
        raise ConfigError(f"unknown benchmark setting {unknown[0]!r}; see `metagrad bench --list`")
    sweep = [()]
    if args.sweep:
        key, _, values = args.sweep.partition("=")
        if not values:
            raise ConfigError(f"--sweep {args.sweep!r}: write KEY=V1,V2,... ")
        sweep = [(f"{key}={value}",) for value in values.split(",")]
    approaches = args.approaches or APPROACHES
    for approach in approaches:
        available(approach)  # unknown names fail before anything runs
    with args.out.open("w") if args.out else contextlib.nullcontext() as out:
        for name in args.settings or list(SETTINGS):
            for extra in sweep:
                rows = run_setting(
                    name,
                    approaches,
                    overrides=[*args.overrides, *extra],
                    repeats=args.repeats,
                    warmup=args.warmup,
                    device=args.device,
                    allocator=args.allocator,
                    check=not args.no_check,
                    progress=lambda line: print(line, file=sys.stderr, flush=True),
                )
                title = " ".join([name, *args.overrides, *extra])
                about = SETTINGS[name].about + "".join(f"; here {o}" for o in extra)
                print(format_table(title, about, rows) + "\n", flush=True)
                for row in rows if out else ():
                    print(json.dumps({**row, "allocator": args.allocator}), file=out, flush=True)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from metagrad.config import load_config
    from metagrad.sweeps.folder import SweepFolder
    from metagrad.sweeps.runner import run_sweep
    from metagrad.sweeps.spec import grid_sweep, spec_sweep, split_values

    if launched():
        raise ConfigError(
            "metagrad sweep runs in one process and starts its cells itself: run it without "
            "torchrun (--nproc-per-node P runs each cell on P processes)"
        )
    common = list(args.overrides)
    if args.data_root is not None:
        common.append(f"task.data_root={args.data_root}")
    swept = []
    for axis in args.axes:
        key, _, text = axis.partition("=")
        single = "=" in axis and len(split_values(text, key)) == 1
        (common if single else swept).append(axis)
    if args.spec is not None:
        if swept:
            raise ConfigError("give the swept values either as KEY=V1,V2 or in --spec, not both")
        sweep = spec_sweep(args.config, args.spec, common, args.count)
    else:
        if not swept:
            raise ConfigError(
                "nothing to sweep: give KEY=V1,V2,... (e.g. task.n_way=2,3,5) or --spec FILE"
            )
        sweep = grid_sweep(args.config, swept, common)
    out = args.out or Path("sweeps") / load_config(args.config, common).name
    rows = run_sweep(
        sweep,
        SweepFolder(out),
        jobs=args.jobs,
        nproc_per_node=args.nproc_per_node,
        max_memory=args.max_memory,
        progress=not args.no_progress,
        wandb_project=args.wandb,
    )
    counts = Counter(row["status"] for row in rows)
    print(f"sweep folder {out}: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    print(f"summary: {out / 'summary.csv'}; compare with `metagrad report {out}`")
    return 0 if set(counts) <= {"finished", "skipped"} else 1


def _report(args: argparse.Namespace) -> int:
    from metagrad.report import write_report

    path = write_report(args.runs, args.out or args.runs[0] / "report")
    print(f"wrote {path} and its figures")
    return 0


def _config_list(args: argparse.Namespace) -> int:
    from metagrad.config import preset_names

    print("\n".join(preset_names()))
    return 0


def _config_show(args: argparse.Namespace) -> int:
    from metagrad.config import dump_yaml, load_config

    print(dump_yaml(load_config(args.config, args.overrides)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
