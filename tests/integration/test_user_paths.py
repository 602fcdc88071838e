"""What a new user sees: the version, readable help, start-up lines, progress without a bar,
evaluation results that never overwrite each other, and clear refusals before any compute."""

import json

import pytest

from metagrad import __version__, runs
from metagrad.cli import main
from metagrad.config import load_config
from metagrad.evaluate import evaluate_run
from metagrad.train import fit

TINY = [
    "train.iterations=4",
    "train.val_every=2",
    "train.ckpt_every=2",
    "train.log_every=1",
    "train.val_tasks=4",
    "eval.num_tasks=4",
    "eval.inner_steps=2",
]


def cli(capsys, *args):
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit:  # argparse: --help, --version, usage errors
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def run(tmp_path):
    config = load_config("maml-sinusoid-5shot", [*TINY, "train.strategy=batched"])
    return fit(config, tmp_path / "run", progress=False)


def test_version(capsys):
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"metagrad {__version__}"


def test_eval_help_gives_one_example_of_set(capsys):
    code, out, _ = cli(capsys, "eval", "--help")
    text = " ".join(out.split())
    assert code == 0 and "e.g. --set eval.num_tasks=1000 eval.inner_lr=0.02" in text
    assert "train.iterations" not in text


def test_time_budget_help_says_what_it_counts(capsys):
    _, out, _ = cli(capsys, "train", "--help")
    assert "counts the outer steps only" in " ".join(out.split())


def test_start_up_is_announced_and_progress_printed_without_a_bar(tmp_path, capsys):
    config = load_config("maml-sinusoid-5shot", TINY)
    fit(config, tmp_path / "run", progress=False)
    out = capsys.readouterr().out
    for line in (
        "loading the sinusoid tasks",
        "building the mlp model and the maml algorithm",
        "choosing how to execute a meta-step",
        "training from step 0 to 4",
        "step 4/4",
    ):
        assert line in out
    assert out.index("loading") < out.index("building") < out.index("choosing")


def test_evaluations_are_named_by_what_they_evaluated_and_never_overwritten(run, capsys):
    first = evaluate_run(run, checkpoint="last")
    again = evaluate_run(run, checkpoint="last")
    one_shot = evaluate_run(run, checkpoint="last", overrides=["eval.k_shot=1"])
    names = [result["saved_to"] for result in (first, again, one_shot)]
    assert [n.removeprefix(str(run) + "/") for n in names] == [
        "eval-test-last-5shot-2steps.json",
        "eval-test-last-5shot-2steps-2.json",
        "eval-test-last-1shot-2steps.json",
    ]
    assert json.loads((run / "eval-test-last-1shot-2steps.json").read_text())["k_shot"] == 1
    code, out, _ = cli(capsys, "eval", run, "--checkpoint", "best")
    assert code == 0 and "test tasks (4), 5-shot, best checkpoint" in out
    assert f"saved {run / 'eval-test-best-5shot-2steps.json'}" in out


@pytest.mark.parametrize("command", ["eval", "plot"])
def test_a_folder_without_a_config_is_not_a_run_folder(tmp_path, capsys, command):
    (tmp_path / "folder").mkdir()
    code, _, err = cli(capsys, command, tmp_path / "folder")
    assert code == 4 and "is not a run folder" in err


def test_figures_that_cannot_be_written_are_a_clear_error(run, tmp_path, capsys):
    blocked = tmp_path / "a-file"
    blocked.write_text("the user's")
    code, _, err = cli(capsys, "plot", run, "--out", blocked / "plots")
    assert code == 4 and "cannot write the figures" in err and "--out" in err, err
    assert blocked.read_text() == "the user's"


def refuse_writes(monkeypatch, folder):
    """A read-only folder as the code checks it (tests run as root, where chmod stops nothing)."""
    real = runs.os.access
    monkeypatch.setattr(
        runs.os, "access", lambda p, mode: False if str(p) == str(folder) else real(p, mode)
    )


def test_a_read_only_run_folder_is_refused_before_any_compute(run, capsys, monkeypatch):
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    refuse_writes(monkeypatch, run)
    for args in (["eval", run], ["train", "--resume", run, "--set", "train.iterations=8"]):
        code, out, err = cli(capsys, *args)
        assert code == 4 and "not writable" in err and "Traceback" not in err, err
        assert "loading" not in out
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def not_a_module(num_classes: int = 1):
    return "a string"


def needs_width(width: int):
    return None


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("model.name=no_such_package_xyz:net", "cannot import 'no_such_package_xyz'"),
        (f"model.name={__name__}:missing", "has no 'missing'"),
        (f"model.name={__name__}:not_a_module", "returned str, not a torch.nn.Module"),
        (f"model.name={__name__}:needs_width", "set the matching kwargs (model.kwargs)"),
        ("model.name=:net", "write package.module:name"),
        ("algorithm.name=no_such_package_xyz:Rule", "cannot import 'no_such_package_xyz'"),
        (f"algorithm.name={__name__}:missing", "has no 'missing'"),
        ("eval.batch_norm=running", "keeps no batch-norm running statistics"),
    ],
)
def test_code_named_in_a_config_that_cannot_be_used_is_a_clear_error(
    tmp_path, capsys, setting, message
):
    run_dir = tmp_path / "run"
    code, _, err = cli(
        capsys, "train", "maml-sinusoid-5shot", "--run-dir", run_dir, "--set", setting
    )
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not run_dir.exists()
