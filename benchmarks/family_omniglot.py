"""Every algorithm of the family on Omniglot 5-way (or `--ways 20`) 1-shot, each from its own
preset, with the same CPU training budget, evaluated on the same 600 fixed test tasks; prints a
markdown table.

    python benchmarks/family_omniglot.py --data-root ../shared/datasets/omniglot --budget 300

Runs go to `--out` (default `runs/family-omniglot`); a finished run is not trained again, an
interrupted one resumes. Each run holds `/tmp/metagrad-heavy.lock` while it trains and is
evaluated, so nothing else heavy runs beside it on a small machine.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
from pathlib import Path

from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore
from metagrad.config import load_config
from metagrad.errors import MetagradError
from metagrad.evaluate import evaluate_run
from metagrad.train import fit

ROWS = [
    # label, preset stem, the paper's full-schedule accuracy (%, Omniglot 1-shot) at 5 and 20 ways
    ("MAML", "maml", "98.7 ± 0.4 (Finn et al.)", "95.8 ± 0.3 (Finn et al.)"),
    ("first-order MAML", "fomaml", "98.3 ± 0.5 (Finn et al.)", "89.4 ± 0.5 (Finn et al.)"),
    (
        "Reptile",
        "reptile",
        "97.68 ± 0.04 transductive (Nichol et al.)",
        "89.43 ± 0.14 transductive (Nichol et al.)",
    ),
    ("ANIL", "anil", "— (reports 20-way only)", "96.2 ± 0.5 (Raghu et al.)"),
    ("BOIL", "boil", "— (not reported)", "— (not reported)"),
    ("Meta-SGD", "metasgd", "99.53 ± 0.26 (Li et al.)", "95.93 ± 0.38 (Li et al.)"),
    (
        "MAML++",
        "mamlpp",
        "99.47 (Antoniou et al., 5-best ensemble)",
        "97.65 ± 0.05 (Antoniou et al., 5-best ensemble)",
    ),
    ("Prototypical Networks", "protonets", "98.8 (Snell et al.)", "96.0 (Snell et al.)"),
    ("Baseline", "baseline", "— (not reported on Omniglot)", "— (not reported on Omniglot)"),
    ("Baseline++", "baselinepp", "— (not reported on Omniglot)", "— (not reported on Omniglot)"),
]
LOCK = Path("/tmp/metagrad-heavy.lock")


def run(preset: str, out: Path, data_root: str, budget: float, val_every: int) -> dict:
    """Train `preset` for `budget` seconds (validation not counted) and evaluate it."""
    overrides = [
        f"task.data_root={data_root}",
        f"train.time_budget={budget}",
        f"train.val_every={val_every}",
        "train.ckpt_every=250",
        "eval.num_tasks=600",
    ]
    config = load_config(preset, overrides)
    folder = out / preset
    store = CheckpointStore(folder / CHECKPOINT_DIR)
    finished = (folder / "result.json").is_file()
    if not finished:
        resume = store.folder.is_dir() and bool(store.any_paths())
        fit(config, folder, resume=resume, progress=False)
        last = store.load("last")
        results = {
            "single": evaluate_run(folder),
            "steps": last["step"],
            "seconds": last["elapsed"],
        }
        if config.train.keep_best > 1 and len(store.steps("top")) >= config.train.keep_best:
            results["ensemble"] = evaluate_run(folder, ensemble=config.train.keep_best)
        (folder / "result.json").write_text(json.dumps(results, indent=2))
    return json.loads((folder / "result.json").read_text())


def cell(result: dict) -> str:
    mean, ci = result["mean"]["accuracy"][-1], result["ci95"]["accuracy"][-1]
    return f"{100 * mean:.2f} ± {100 * ci:.2f}% ({len(result['mean']['accuracy']) - 1} steps)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--budget", type=float, default=300, help="training seconds per run")
    parser.add_argument("--out", type=Path, default=Path("runs/family-omniglot"))
    parser.add_argument(
        "--val-every", type=int, default=100, help="outer steps between validations"
    )
    parser.add_argument("--ways", type=int, choices=(5, 20), default=5, help="5- or 20-way 1-shot")
    parser.add_argument("--only", nargs="*", help="presets to run, in this order (default: all)")
    args = parser.parse_args()
    rows = [
        (label, f"{stem}-omniglot-{args.ways}w1s", paper_5 if args.ways == 5 else paper_20)
        for label, stem, paper_5, paper_20 in ROWS
    ]
    if args.only:
        by_preset = {row[1]: row for row in rows}
        unknown = sorted(set(args.only) - set(by_preset))
        if unknown:
            parser.error(f"not {args.ways}-way presets of this table: {', '.join(unknown)}")
        rows = [by_preset[preset] for preset in args.only]
    lines = [
        f"| algorithm (preset) | outer steps in {args.budget:g} s | s / step | test accuracy "
        "after the preset's test steps | paper, full schedule |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, preset, paper in rows:
        with LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                result = run(preset, args.out, args.data_root, args.budget, args.val_every)
            except MetagradError as error:
                sys.exit(f"{preset}: {error}")
        speed = result["seconds"] / max(result["steps"], 1)
        accuracy = cell(result["single"])
        if "ensemble" in result:
            accuracy += f"; 5-best ensemble {cell(result['ensemble'])}"
        lines.append(
            f"| {label} (`{preset}`) | {result['steps']:,} | {speed:.3f} | {accuracy} | {paper} |"
        )
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
