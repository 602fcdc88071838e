"""What the fault suite shares besides fixtures: the run it injects faults into, and what
"the same run" and "nothing lost" mean."""

import subprocess

import torch

from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore
from metagrad.config import load_config
from metagrad.train import fit

PRESET = "maml-sinusoid-5shot"
SETTINGS = [
    "train.iterations=40",
    "train.ckpt_every=5",
    "train.val_every=10",
    "train.log_every=5",
    "train.val_tasks=4",
    "train.strategy=batched",
    "train.snapshot_seconds=[0.0001]",
    "eval.num_tasks=4",
    "eval.inner_steps=2",
]
"""A short run with every kind of checkpoint (step, best, time snapshot)."""


def config(iterations=40):
    return load_config(PRESET, [*SETTINGS, f"train.iterations={iterations}"])


def remount(folder, mode):
    subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True)


def snapshot(folder):
    """Every file's bytes: what "nothing lost" compares."""
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def assert_same_run(expected, actual):
    """Same final parameters, optimizer state, best and metrics file, bit for bit."""
    a, b = (CheckpointStore(run / CHECKPOINT_DIR).load("last") for run in (expected, actual))
    assert a["step"] == b["step"] and a["best"] == b["best"]
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for index, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][index][key]), (index, key)
    assert (expected / "metrics.jsonl").read_text() == (actual / "metrics.jsonl").read_text()


def resume(run, iterations=40):
    return fit(config(iterations), run, resume=True, progress=False)
