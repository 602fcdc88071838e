"""Fixtures of the fault suite: the command line in process, tmpfs mounts, reference runs."""

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from faultkit import config

from metagrad.cli import main
from metagrad.train import fit


@dataclass
class Done:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """`metagrad ARGS` in this process: its exit code, stdout and stderr."""

    def run(*args):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit:
            code = exit.code
        out, err = capsys.readouterr()
        return Done(code, out, err)

    return run


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The uninterrupted run every interrupted one must equal, bit for bit."""
    return fit(config(), tmp_path_factory.mktemp("reference") / "run", progress=False)


@pytest.fixture(scope="session")
def halfway(tmp_path_factory):
    """The same run stopped cleanly at step 20 (same numbers: the schedule is constant)."""
    return fit(config(20), tmp_path_factory.mktemp("halfway") / "run", progress=False)


@pytest.fixture
def partial(halfway, tmp_path):
    """A copy of `halfway` to damage."""
    return Path(shutil.copytree(halfway, tmp_path / "run", symlinks=True))


@pytest.fixture
def tmpfs(tmp_path):
    """`mount(size)`: a fresh tmpfs folder (skips where mounting is not allowed)."""
    mounted = []

    def mount(size):
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        args = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)
