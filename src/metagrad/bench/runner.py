"""`metagrad bench`: every approach on identical shapes, seeds and hyper-parameters, one
process at a time; a table of seconds per meta-iteration, tasks/s, peak memory, ratios to
learn2learn, and each meta-gradient checked against metagrad's per-task loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from metagrad.bench.peers import PEERS, installed
from metagrad.errors import ConfigError
from metagrad.execution.strategies import STRATEGIES

APPROACHES = (*STRATEGIES, "auto", *PEERS, "sampler")
"""Run by default; also available: "planned" (the fastest way within train.max_memory), a
strategy with a chunk size ("hybrid/8") or inner-step checkpointing ("loop+checkpoint")."""
REFERENCE = "loop"
BASELINE = "learn2learn"
GRADIENT_TOLERANCE = 1e-8
"""Relative error (float64) beyond which a meta-gradient is reported as disagreeing."""


def available(approach: str) -> bool:
    strategy = approach.split("+")[0].split("/")[0]
    if strategy in (*STRATEGIES, "auto", "planned", "sampler"):
        return True
    if approach not in PEERS:
        raise ConfigError(
            f"unknown benchmark approach {approach!r}; choose from {', '.join(APPROACHES)} "
            "(a metagrad strategy may take a chunk size: hybrid/8)"
        )
    return installed(approach)


def run_worker(spec: dict, allocator: str) -> dict:
    """One measurement in a fresh process; raises with the worker's error output on failure."""
    env = dict(os.environ)
    if allocator == "default":
        env["METAGRAD_DEFAULT_MALLOC"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "metagrad.bench.worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        return {**spec, "error": done.stderr.strip().splitlines()[-1] if done.stderr else "?"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def relative_error(grads: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    num = sum(float((g - r).double().square().sum()) for g, r in zip(grads, reference, strict=True))
    den = sum(float(r.double().square().sum()) for r in reference)
    return (num / den) ** 0.5


def run_setting(
    setting: str,
    approaches: Sequence[str],
    *,
    overrides: Sequence[str] = (),
    repeats: int = 10,
    warmup: int = 2,
    device: str = "cpu",
    allocator: str = "tuned",
    check: bool = True,
    progress: Callable[[str], object] = print,
) -> list[dict]:
    """Measure every approach on `setting`; the rows carry gradient errors and ratios."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for approach in approaches:
            if not available(approach):
                rows.append({"approach": approach, "error": "not installed (pip install .[bench])"})
                continue
            spec = {
                "setting": setting,
                "overrides": list(overrides),
                "approach": approach,
                "repeats": repeats,
                "warmup": warmup,
                "device": device,
                "check": check,
                "grads_file": str(Path(folder) / f"{approach.replace('/', '-')}.pt"),
            }
            progress(f"  {setting} {' '.join(overrides)} {approach} …")
            rows.append(run_worker(spec, allocator))
        _compare_gradients(rows)
    _add_ratios(rows)
    return rows


def _compare_gradients(rows: list[dict]) -> None:
    reference = next((r for r in rows if r["approach"] == REFERENCE and "error" not in r), None)
    if reference is None or not reference.get("check", True):
        return
    expected = torch.load(reference["grads_file"], weights_only=True)
    for row in rows:
        if "error" in row or row["approach"] == "sampler" or not row.get("check", True):
            continue
        grads = torch.load(row["grads_file"], weights_only=True)
        row["grad_rel_error"] = relative_error(grads, expected)


def _add_ratios(rows: list[dict]) -> None:
    baseline = next((r for r in rows if r["approach"] == BASELINE and "error" not in r), None)
    timed = [
        r for r in rows if "error" not in r and r["approach"] not in ("sampler", "auto", "planned")
    ]
    fastest = min(timed, key=lambda r: r["median_s"]) if timed else None
    for row in rows:
        if "error" in row:
            continue
        if baseline:
            row["speedup_vs_l2l"] = baseline["median_s"] / row["median_s"]
            row["memory_vs_l2l"] = row["peak_rss_mib"] / baseline["peak_rss_mib"]
        if row["approach"] == "sampler" and fastest:
            row["share_of_fastest_step"] = row["median_s"] / fastest["median_s"]
    auto = next((r for r in rows if r["approach"] == "auto" and "error" not in r), None)
    ours = [r for r in timed if r["approach"] in STRATEGIES]
    if auto and ours:
        auto["fastest_strategy"] = min(ours, key=lambda r: r["median_s"])["approach"]


def format_table(setting: str, about: str, rows: list[dict]) -> str:
    """A Markdown table of one setting's rows."""
    lines = [
        f"### {setting}: {about}",
        "",
        "| approach | s / meta-iter (median) | tasks/s | peak RSS MiB | meta-step MiB "
        "| speed vs learn2learn | peak memory vs learn2learn | grad rel. error (float64) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        name = row["approach"]
        if "error" in row:
            lines.append(f"| {name} | {row['error']} | | | | | | |")
            continue
        if name == "sampler":
            share = row.get("share_of_fastest_step")
            note = f"{share:.1%} of the fastest meta-step" if share is not None else ""
            ms = row["median_s"] * 1e3
            lines.append(f"| sampling a meta-batch | {ms:.2f} ms | | | | {note} | | |")
            continue
        if name == "auto":
            name = f"auto → {row['chosen']} (fastest: {row.get('fastest_strategy', '?')})"
        if name == "planned":
            name = f"planned within {row['budget_mib'] / 1024:.3g} GiB → {row['chosen']}"
        error = row.get("grad_rel_error")
        lines.append(
            f"| {name} | {row['median_s']:.4g} | {row['tasks_per_s']:.1f} "
            f"| {row['peak_rss_mib']:.0f} | {row['work_mib']:.0f} "
            f"| {_ratio(row.get('speedup_vs_l2l'))} "
            f"| {_ratio(row.get('memory_vs_l2l'))} "
            f"| {'—' if error is None else f'{error:.1e}'}"
            f"{'' if error is None or error <= GRADIENT_TOLERANCE else ' DISAGREES'} |"
        )
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"
