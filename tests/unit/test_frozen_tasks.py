"""Frozen task sets: an exported file evaluates to exactly what `metagrad eval` reports, records
the same hash, and is refused when changed or when its tasks are not the run's."""

import hashlib
import json

import pytest
import torch

from metagrad.build import build_tasks
from metagrad.cli import main
from metagrad.config import dump_yaml, load_config
from metagrad.data.folder import splits_from_tensors
from metagrad.errors import ConfigError, DatasetError
from metagrad.evaluate import evaluate_run, fixed_batches
from metagrad.runs import MARKER_FILE
from metagrad.tasks.frozen import draw_tasks, export_tasks, load_tasks
from metagrad.train import fit

IMAGE_RUN = [
    "task.dataset=folder",
    "task.n_way=3",
    "task.n_query=2",
    "task.rotations=[]",
    "task.image_size=12",
    "model.hidden=[4]",
    "model.pool=stride",
    "train.meta_batch_size=2",
    "train.strategy=loop",
    "train.iterations=2",
    "train.val_every=2",
    "train.val_tasks=2",
    "train.ckpt_every=2",
    "eval.num_tasks=5",
    "eval.n_query=2",
    "eval.inner_steps=2",
    "eval.batch_size=2",
]
"""A Conv-4 of 4 filters on 12×12 images given from Python (`images`): 3-way 1-shot tasks."""
SINUSOID_RUN = [
    "train.iterations=2",
    "train.val_every=2",
    "train.ckpt_every=2",
    "train.val_tasks=2",
    "eval.num_tasks=4",
    "eval.inner_steps=2",
]


def images(size=12, prefix=""):
    generator = torch.Generator().manual_seed(0)

    def classes(name, count):
        return {
            f"{prefix}{name}{i}": torch.rand(5, 1, size, size, generator=generator)
            for i in range(count)
        }

    return splits_from_tensors(train=classes("a", 6), val=classes("b", 4), test=classes("c", 4))


def image_config(*overrides):
    return load_config("maml-omniglot-5w1s", [*IMAGE_RUN, *overrides])


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("image") / "run"
    return fit(image_config(), folder, progress=False, images=images())


@pytest.fixture(scope="module")
def sinusoid_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sinusoid") / "run"
    return fit(load_config("maml-sinusoid-5shot", SINUSOID_RUN), folder, progress=False)


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_a_drawn_task_set_gives_the_batches_of_fixed_evaluation():
    config = image_config()
    source = build_tasks(config, evaluation=True, images=images())
    drawn = draw_tasks(config, source, "test", 5).batches(config, source, 2)
    expected = fixed_batches(source, "test", 5, 2)
    assert len(drawn) == len(expected) == 3
    for a, b in zip(drawn, expected):
        assert all(torch.equal(x, y) for x, y in zip(a.tensors(), b.tensors()))


def test_an_exported_image_task_set_evaluates_exactly_as_plain_evaluation(image_run, tmp_path):
    given = images()
    plain = evaluate_run(image_run, images=given)
    path = tmp_path / "tasks.pt"
    exported = export_tasks(image_config(), "test", 5, path, images=given)
    frozen = evaluate_run(image_run, images=given, tasks=path)
    assert frozen["mean"] == plain["mean"] and frozen["ci95"] == plain["ci95"]
    assert frozen["tasks_sha256"] == plain["tasks_sha256"] == exported.sha256
    assert (plain["tasks_file"], frozen["tasks_file"]) == (None, str(path))
    assert plain["saved_to"].endswith("/eval-test-best-1shot-2steps.json")
    assert frozen["saved_to"].endswith(
        f"/eval-test-best-1shot-2steps-tasks{exported.sha256[:8]}.json"
    )

    saved = torch.load(path, weights_only=True)
    arrays, names = saved["arrays"], saved["class_names"]
    assert saved["dataset"] == "folder" and saved["image_shape"] == [1, 12, 12]
    assert arrays["classes"].shape == (5, 3) and arrays["support"].shape == (5, 3, 1)
    assert arrays["query"].shape == (5, 3, 2) and arrays["y_query"].shape == (5, 6)
    test_names = given["test"].class_names
    assert names == [[test_names[c] for c in row] for row in arrays["classes"].tolist()]
    assert arrays["y_query"].tolist() == (arrays["query_order"] // 2).tolist()
    for support, query in zip(arrays["support"].flatten(0, 1), arrays["query"].flatten(0, 1)):
        assert not set(support.tolist()) & set(query.tolist())
    metadata = saved["metadata"]
    assert (metadata["n_way"], metadata["k_shot"], metadata["n_query"]) == (3, 1, 2)
    assert (
        metadata["config"]["train"] == {"seed": 0} and "data_root" not in metadata["config"]["task"]
    )


def test_the_hash_is_the_documented_one_stable_and_of_the_tasks(tmp_path):
    config = image_config()
    first = export_tasks(config, "test", 3, tmp_path / "a.pt", images=images())
    again = export_tasks(config, "test", 3, tmp_path / "b.pt", images=images())
    assert first.sha256 == again.sha256 == load_tasks(tmp_path / "b.pt").sha256
    saved = torch.load(tmp_path / "a.pt", weights_only=True)
    content = {k: saved[k] for k in ("dataset", "split", "image_shape", "class_names")}
    content["arrays"] = {name: t.tolist() for name, t in saved["arrays"].items()}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(text.encode()).hexdigest() == saved["sha256"] == first.sha256
    other_seed = export_tasks(
        image_config("train.seed=1"), "test", 3, tmp_path / "c.pt", images=images()
    )
    val = export_tasks(config, "val", 3, tmp_path / "d.pt", images=images())
    assert len({first.sha256, other_seed.sha256, val.sha256}) == 3


def test_a_changed_file_is_refused_by_its_hash(image_run, tmp_path):
    path = tmp_path / "tasks.pt"
    export_tasks(image_config(), "test", 5, path, images=images())
    saved = torch.load(path, weights_only=True)
    saved["arrays"]["support"][0, 0, 0] = (saved["arrays"]["support"][0, 0, 0] + 1) % 5
    torch.save(saved, path)
    with pytest.raises(DatasetError, match=r"tasks.pt was changed or damaged: its content hashes"):
        load_tasks(path)
    with pytest.raises(DatasetError, match="changed or damaged"):
        evaluate_run(image_run, images=images(), tasks=path)


def test_a_file_of_other_tasks_is_refused_naming_what_differs(image_run, sinusoid_run, tmp_path):
    def refused(run, given, file_images, *overrides, **kwargs):
        path = tmp_path / f"tasks-{len(list(tmp_path.iterdir()))}.pt"
        export_tasks(image_config(*overrides), "test", 5, path, images=file_images)
        with pytest.raises(ConfigError) as refusal:
            evaluate_run(run, images=given, tasks=path, **kwargs)
        return str(refusal.value)

    message = refused(sinusoid_run, None, images())
    assert "tasks of task.dataset = folder, but the run's is sinusoid" in message
    message = refused(image_run, images(), images(), "eval.n_query=3")
    assert "3-way 1-shot tasks with 3 query examples per class" in message
    assert "eval.n_query = 2; evaluate with --set eval.n_query=3" in message
    message = refused(image_run, images(), images(size=10))
    assert "1×10×10 images (channels × height × width), but the run's are 1×12×12" in message
    message = refused(image_run, images(), images(prefix="other-"))
    assert "4 classes of task file" in message and "not classes of the run's test split" in message
    message = refused(image_run, images(), images(), split="val")
    assert "holds test tasks, but the val split was asked" in message


def test_export_never_replaces_a_file_and_leaves_nothing_of_its_own(tmp_path, capsys):
    path = tmp_path / "tasks.pt"
    path.write_text("the user's own file")
    code, _, err = cli(capsys, "tasks", "export", "maml-sinusoid-5shot", "--num", 2, "-o", path)
    assert code == 2 and "already exists and is not replaced" in err
    assert path.read_text() == "the user's own file"
    fresh = tmp_path / "fresh.pt"
    code, _, _ = cli(capsys, "tasks", "export", "maml-sinusoid-5shot", "--num", 2, "-o", fresh)
    assert code == 0 and load_tasks(fresh).sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.pt", "tasks.pt"]  # no temporary


def test_export_and_eval_from_the_command_line(sinusoid_run, tmp_path, capsys):
    path = tmp_path / "tasks.pt"
    code, out, _ = cli(capsys, "tasks", "export", "maml-sinusoid-5shot", "--num", 4, "-o", path)
    sha = load_tasks(path).sha256
    assert code == 0 and "4 test tasks of sinusoid, 5 support and 100 query" in out
    assert f"sha256 {sha}" in out
    code, plain_out, _ = cli(capsys, "eval", sinusoid_run)
    assert code == 0 and f"; task set {sha[:8]}; mean" in plain_out
    code, out, _ = cli(capsys, "eval", sinusoid_run, "--tasks", path)
    assert code == 0 and f"; task set {sha[:8]} (from {path}); mean" in out
    assert out.split("\n")[1:-2] == plain_out.split("\n")[1:-2]  # the same metrics
    saved = sinusoid_run / f"eval-test-best-5shot-2steps-tasks{sha[:8]}.json"
    assert json.loads(saved.read_text())["tasks_sha256"] == sha


def test_bad_task_files_and_requests_are_refused_with_an_exit_code(sinusoid_run, tmp_path, capsys):
    path = tmp_path / "tasks.pt"
    cli(capsys, "tasks", "export", "maml-sinusoid-5shot", "--num", 2, "-o", path, "--split", "val")
    (tmp_path / "text.pt").write_text("not a task file")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    saved = torch.load(path, weights_only=True)
    saved["arrays"]["x_query"][0, 0, 0] += 1
    torch.save(saved, tmp_path / "changed.pt")
    rl_run = tmp_path / "rl"
    rl_run.mkdir()
    (rl_run / MARKER_FILE).write_text("{}\n")
    (rl_run / "config.yaml").write_text(dump_yaml(load_config("maml-trpo-navigation2d")))
    for args, code, message in [
        (["eval", sinusoid_run, "--tasks", tmp_path / "missing.pt"], 3, "cannot be read"),
        (["eval", sinusoid_run, "--tasks", tmp_path / "text.pt"], 3, "not a metagrad task file"),
        (["eval", sinusoid_run, "--tasks", tmp_path / "other.pt"], 3, "format 'something else'"),
        (["eval", sinusoid_run, "--tasks", tmp_path / "changed.pt"], 3, "changed or damaged"),
        (["eval", sinusoid_run, "--tasks", path, "--split", "test"], 2, "holds val tasks"),
        (
            ["eval", sinusoid_run, "--tasks", path, "--set", "eval.n_query=10"],
            2,
            "5 support and 100 query examples, but the run's have 5 and 10",
        ),
        (["eval", rl_run, "--tasks", path], 2, "--tasks is for supervised runs"),
        (["tasks", "export", "maml-trpo-navigation2d", "-o", path], 2, "meta-RL environment"),
        (["tasks", "export", "no-such-preset", "-o", path], 2, "unknown preset"),
    ]:
        exit_code, _, err = cli(capsys, *args)
        assert exit_code == code and err.startswith("metagrad: error: ") and message in err, err
