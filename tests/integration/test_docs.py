"""Every snippet of the guides runs: docs/your-own-work.md in order, and the README quick start."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
SHORT = [
    "--set",
    "train.iterations=4",
    "train.val_every=2",
    "train.val_tasks=4",
    "eval.num_tasks=4",
    "--no-progress",
]
"""Appended to each `metagrad train` of a guide: its commands, at a test's size."""


def blocks(path: Path) -> list[tuple[str, str]]:
    return BLOCK.findall(path.read_text())


def image_folder(root: Path, classes: int = 20, images: int = 4) -> None:
    for c in range(classes):
        folder = root / f"class-{c:02d}"
        folder.mkdir(parents=True)
        for i in range(images):
            Image.new("L", (16, 16), color=(c * 12 + i * 3) % 256).save(folder / f"{i}.png")


def run_blocks(found: list[tuple[str, str]], cwd: Path, monkeypatch) -> None:
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(cwd))
    namespace: dict = {}
    for language, text in found:
        first = text.splitlines()[0]
        if first.startswith("# file: "):
            (cwd / first.removeprefix("# file: ")).write_text(text)
        elif language == "python":
            exec(compile(text, "snippet", "exec"), namespace)
        elif language == "bash":
            for line in filter(None, text.splitlines()):
                args = shlex.split(line)
                assert args[0] == "metagrad", line
                extra = SHORT if args[1] == "train" else []
                done = subprocess.run(
                    [sys.executable, "-m", "metagrad", *args[1:], *extra],
                    cwd=cwd,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    env={**os.environ, "PYTHONPATH": str(cwd)},
                )
                assert done.returncode == 0, (line, done.stderr)


@pytest.mark.slow
def test_your_own_work_guide_runs(tmp_path, monkeypatch):
    image_folder(tmp_path / "my_images")
    run_blocks(blocks(ROOT / "docs" / "your-own-work.md"), tmp_path, monkeypatch)
    assert (tmp_path / "runs" / "my-run" / "plots" / "learning-curves.png").is_file()
    evaluations = (tmp_path / "runs" / "my-run").glob("eval-*.json")
    modes = {json.loads(path.read_text())["batch_norm"].split(":")[0] for path in evaluations}
    assert modes == {"transductive", "running"}
    assert list((tmp_path / "runs" / "last-layer" / "checkpoints").glob("best-*.pt"))


def test_readme_quick_start_runs(tmp_path, monkeypatch, capsys):
    found = [(lang, text) for lang, text in blocks(ROOT / "README.md") if lang == "python"]
    assert found
    run_blocks(found, tmp_path, monkeypatch)
    assert "loss" in capsys.readouterr().out
