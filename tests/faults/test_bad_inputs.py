"""Bad inputs a new user or an attacker tries: each ends with its exit code and a message that
names what was wrong, never a traceback, and changes nothing. `BAD_INPUTS` is the figure the
README gives."""

import json

import pytest

from metagrad.config import dump_yaml, load_config
from metagrad.runs import MARKER_FILE

TRAIN = ["train", "maml-sinusoid-5shot"]
BAD_INPUTS = [
    ([*TRAIN, "--set", "train.seed=-1"], 2, "train.seed = -1"),
    ([*TRAIN, "--set", f"train.seed={2**70}"], 2, f"train.seed = {2**70}"),
    ([*TRAIN, "--set", "task.image_size=100000"], 2, "task.image_size = 100000"),
    ([*TRAIN, "--set", "train.outer_lr=.inf"], 2, "train.outer_lr = inf must be a finite"),
    ([*TRAIN, "--set", "algorithm.inner_lr=.nan"], 2, "algorithm.inner_lr = nan"),
    ([*TRAIN, "--set", "model.hidden=[]"], 2, "model.hidden = []"),
    ([*TRAIN, "--set", "name=../../x"], 2, "name = '../../x' must be a plain name"),
    ([*TRAIN, "--set", "name=/tmp/x"], 2, "must be a plain name"),
    ([*TRAIN, "--set", "train.iteratons=5"], 2, "did you mean 'train.iterations'"),
    ([*TRAIN, "--set", "train.meta_batch_size=0"], 2, "train.meta_batch_size = 0"),
    ([*TRAIN, "--set", "train.iterations"], 2, "not of the form key=value"),
    ([*TRAIN, "--time-budget", "soon"], 2, "'soon' is not a duration"),
    (["train", "maml-sinusiod-5shot"], 2, "did you mean 'maml-sinusoid-5shot'"),
    (["train", "binary.yaml"], 2, "cannot be read as text"),
    (["train", "mixed-keys.yaml"], 2, "config key 1 is not a name"),
    (["train", "list.yaml"], 2, "must be a mapping"),
    (["config", "show", "missing.yaml"], 2, "does not exist"),
    (["eval", "project"], 4, "is not a run folder"),
    (["plot", "project"], 4, "is not a run folder"),
    (["eval", "absent"], 4, "does not exist"),
    (["train", "--resume", "project"], 4, "not a run folder"),
    ([*TRAIN, "--run-dir", "victim", "--overwrite"], 4, "not a metagrad run folder"),
    ([*TRAIN, "--run-dir", ".", "--overwrite"], 4, "not a metagrad run folder"),
    ([*TRAIN, "--run-dir", "binary.yaml"], 4, "is a file"),
    (["plot", "sinusoid-run", "omniglot-run"], 4, "measure different things"),
    (["plot", "omniglot-run", "sinusoid-run"], 4, "measure different things"),
    (["bench", "omniglot-99w"], 2, "metagrad bench --list"),
]


def fake_run(folder, preset):
    folder.mkdir()
    (folder / MARKER_FILE).write_text("{}\n")
    (folder / "config.yaml").write_text(dump_yaml(load_config(preset)))
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "val"}) + "\n")


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A working folder with the files the bad inputs name."""
    (tmp_path / "binary.yaml").write_bytes(b"\x00\xff\xfe\x80\x81 binary")
    (tmp_path / "mixed-keys.yaml").write_text("1: a\nfoo: b\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "project").mkdir()
    (tmp_path / "project/data.csv").write_text("1,2\n")
    (tmp_path / "victim/src").mkdir(parents=True)
    (tmp_path / "victim/config.yaml").write_text("a: 1\n")
    (tmp_path / "victim/src/important.py").write_text("keep me\n")
    fake_run(tmp_path / "sinusoid-run", "maml-sinusoid-5shot")
    fake_run(tmp_path / "omniglot-run", "maml-omniglot-5w1s")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("args", "code", "message"), BAD_INPUTS, ids=lambda x: None)
def test_a_bad_input_ends_with_its_exit_code_and_a_message(workspace, cli, args, code, message):
    before = files(workspace)
    done = cli(*args)
    assert done.code == code, done.err
    assert done.err.startswith(("metagrad: error: ", "usage: ")), done.err
    assert message in done.err and "Traceback" not in done.err
    assert files(workspace) == before
