"""Run folders: only metagrad's own are replaced, resume compares with the checkpoint, one
process at a time, and a run stopped before its first checkpoint can be started again."""

import os
import subprocess
import sys

import pytest
import yaml
from torch import nn

from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore
from metagrad.cli import main
from metagrad.config import load_config
from metagrad.errors import CheckpointError
from metagrad.runs import LOCK_FILE, MARKER_FILE, RunLock
from metagrad.train import fit

TINY = [
    "train.iterations=4",
    "train.val_every=2",
    "train.ckpt_every=2",
    "train.log_every=1",
    "train.val_tasks=4",
    "eval.num_tasks=4",
    "eval.inner_steps=2",
    "train.strategy=batched",
]


def tiny(*overrides):
    return load_config("maml-sinusoid-5shot", [*TINY, *overrides])


def cli(capsys, *args):
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.fixture
def run(tmp_path):
    return fit(tiny(), tmp_path / "run", progress=False)


def test_overwrite_never_deletes_a_folder_metagrad_did_not_make(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "victim"
    (victim / "src").mkdir(parents=True)
    (victim / "config.yaml").write_text("a: 1\n")
    (victim / "src/important.py").write_text("keep me")
    code, err = cli(capsys, "train", "maml-sinusoid-5shot", "--run-dir", victim, "--overwrite")
    assert code == 4 and "not a metagrad run folder" in err
    assert (victim / "src/important.py").read_text() == "keep me"


def test_overwrite_refuses_the_working_folder_and_its_parents(run, monkeypatch):
    monkeypatch.chdir(run)
    with pytest.raises(CheckpointError, match="working folder"):
        fit(tiny(), ".", overwrite=True)
    (run / "notes").mkdir()
    monkeypatch.chdir(run / "notes")
    with pytest.raises(CheckpointError, match="working folder"):
        fit(tiny(), run, overwrite=True)
    assert (run / "notes").is_dir() and CheckpointStore(run / CHECKPOINT_DIR).paths("step")


def test_overwrite_through_a_symbolic_link_is_a_clear_error(run, tmp_path):
    (tmp_path / "link").symlink_to(run)
    with pytest.raises(CheckpointError, match="symbolic link"):
        fit(tiny(), tmp_path / "link", overwrite=True)


def test_overwrite_replaces_only_what_metagrad_wrote(run):
    (run / "my-notes.txt").write_text("mine")
    (run / "eval-test-best-5shot-2steps.json").write_text("{}")
    fit(tiny("train.iterations=2"), run, overwrite=True, progress=False)
    assert (run / "my-notes.txt").read_text() == "mine"
    assert not (run / "eval-test-best-5shot-2steps.json").exists()
    assert CheckpointStore(run / CHECKPOINT_DIR).load("last")["step"] == 2


def test_resume_compares_with_the_checkpoint_not_the_edited_config_file(run, capsys):
    config_file = run / "config.yaml"
    edited = yaml.safe_load(config_file.read_text())
    edited["algorithm"]["inner_lr"] = 0.5
    config_file.write_text(yaml.safe_dump(edited))
    code, err = cli(capsys, "train", "--resume", run, "--set", "train.iterations=6")
    assert code == 4 and "algorithm.inner_lr = 0.5" in err and "0.01" in err
    assert CheckpointStore(run / CHECKPOINT_DIR).load("last")["step"] == 4


def test_a_changed_model_shape_is_refused_naming_the_field(run, capsys):
    config_file = run / "config.yaml"
    edited = yaml.safe_load(config_file.read_text())
    edited["model"]["hidden"] = [20, 20]
    config_file.write_text(yaml.safe_dump(edited))
    code, err = cli(capsys, "train", "--resume", run)
    assert code == 4 and "model.hidden = [20, 20]" in err and "Traceback" not in err


def test_a_run_folder_that_cannot_be_made_is_refused_before_loading(tmp_path, capsys):
    blocked = tmp_path / "a-file"
    blocked.write_text("the user's")
    with pytest.raises(CheckpointError, match=r"cannot create run folder .* not a writable folder"):
        fit(tiny(), blocked / "run", progress=False)
    assert "loading" not in capsys.readouterr().out
    assert blocked.read_text() == "the user's"


USER_WIDTH = [8]


def user_net(num_classes: int = 1) -> nn.Module:
    """A user's model whose width is set outside the config, as code that changes would be."""
    return nn.Sequential(nn.Linear(1, USER_WIDTH[0]), nn.ReLU(), nn.Linear(USER_WIDTH[0], 1))


def test_a_model_whose_code_changed_is_refused_on_resume(tmp_path, monkeypatch):
    user = [f"model.name={__name__}:user_net", "train.strategy=vmap"]
    run = fit(tiny(*user), tmp_path / "run", progress=False)
    monkeypatch.setattr(sys.modules[__name__], "USER_WIDTH", [12])
    with pytest.raises(CheckpointError, match=r"does not fit the model.*size mismatch.*restore"):
        fit(tiny(*user, "train.iterations=6"), run, resume=True)


def test_a_locked_run_folder_is_refused_naming_the_holder(run):
    with RunLock(run), pytest.raises(CheckpointError, match=f"in use by process {os.getpid()}"):
        fit(tiny("train.iterations=6"), run, resume=True, progress=False)
    assert CheckpointStore(run / CHECKPOINT_DIR).load("last")["step"] == 4


def test_the_lock_of_a_killed_process_does_not_block(run):
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import fcntl,time; f=open({str(run / LOCK_FILE)!r}); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(CheckpointError, match="in use"):
        fit(tiny("train.iterations=6"), run, resume=True, progress=False)
    holder.kill()
    holder.wait()
    fit(tiny("train.iterations=6"), run, resume=True, progress=False)
    assert CheckpointStore(run / CHECKPOINT_DIR).load("last")["step"] == 6


def test_a_run_without_checkpoints_resumes_as_a_fresh_start(run, capsys):
    for path in (run / CHECKPOINT_DIR).iterdir():
        path.unlink()
    code, err = cli(capsys, "train", "maml-sinusoid-5shot", "--set", *TINY, "--run-dir", run)
    assert code == 4 and "--resume" in err
    code, err = cli(capsys, "train", "--resume", run, "--no-progress")
    assert code == 0, err
    assert CheckpointStore(run / CHECKPOINT_DIR).load("last")["step"] == 4


def test_a_deleted_checkpoint_folder_resumes_as_a_fresh_start(run):
    for path in (run / CHECKPOINT_DIR).iterdir():
        path.unlink()
    (run / CHECKPOINT_DIR).rmdir()
    fit(tiny(), run, resume=True, progress=False)
    assert CheckpointStore(run / CHECKPOINT_DIR).load("last")["step"] == 4


def test_a_new_run_folder_carries_the_marker(run):
    assert (run / MARKER_FILE).is_file()


def test_a_plain_start_in_a_non_run_folder_is_refused(tmp_path):
    (tmp_path / "project").mkdir()
    (tmp_path / "project/data.csv").write_text("1,2")
    with pytest.raises(CheckpointError, match="not a metagrad run folder"):
        fit(tiny(), tmp_path / "project")
    with pytest.raises(CheckpointError, match="is a file"):
        fit(tiny(), tmp_path / "project/data.csv")
