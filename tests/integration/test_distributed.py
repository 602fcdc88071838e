"""Several processes under `torchrun` (gloo, CPU) train the same run as one process.

Each test starts real process groups with `python -m torch.distributed.run`, as a user would.
Tolerance for world-size invariance: float32 parameters after 20 Adam steps agree to
rtol 1e-4, atol 1e-5 (the order of summation of the meta-gradient differs, nothing else).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore, load_checkpoint

SETTINGS = [
    "train.strategy=batched",
    "train.val_every=10",
    "train.val_tasks=20",
    "train.log_every=5",
    "train.ckpt_every=5",
    "eval.num_tasks=50",
    "eval.batch_size=10",
    "eval.inner_steps=2",
]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
KILLED_RANK_SECONDS = 60
"""A killed rank ends the whole run within this time (measured: 0.5 to 0.7 s)."""


def command(nproc: int, *args: str) -> list[str]:
    """`metagrad ARGS` in `nproc` processes (1: without torchrun)."""
    if nproc == 1:
        return [sys.executable, "-m", "metagrad", *args]
    return [*TORCHRUN[:-1], f"--nproc-per-node={nproc}", "-m", "metagrad", *args]


def metagrad(nproc: int, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command(nproc, *args), capture_output=True, text=True, env=ENV, timeout=300
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def train_args(run_dir: Path, iterations: int, *, resume: bool = False, extra=()) -> list[str]:
    run = str(run_dir)
    where = ["--resume", run] if resume else ["maml-sinusoid-5shot", "--run-dir", run]
    settings = [*SETTINGS, f"train.iterations={iterations}", *extra]
    return ["train", *where, "--no-progress", "--set", *settings]


def train(nproc: int, run_dir: Path, iterations: int, *, resume: bool = False):
    return metagrad(nproc, *train_args(run_dir, iterations, resume=resume))


def start_training(run_dir: Path, *extra: str) -> subprocess.Popen:
    """Two processes training (practically) forever in the background."""
    args = train_args(run_dir, 1_000_000, extra=extra)
    return subprocess.Popen(
        command(2, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )


def model_of(run_dir: Path) -> dict[str, torch.Tensor]:
    return CheckpointStore(run_dir / CHECKPOINT_DIR).load("last")["model"]


def assert_same_model(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """20 steps in one process, in two, and 10 + 10 steps across the two world sizes."""
    root = tmp_path_factory.mktemp("distributed")
    train(1, root / "one", 20)
    train(2, root / "two", 20)
    train(2, root / "two-then-one", 10)
    train(1, root / "two-then-one", 20, resume=True)
    train(1, root / "one-then-two", 10)
    train(2, root / "one-then-two", 20, resume=True)
    return root


def test_two_processes_train_the_same_parameters_as_one(runs):
    one, two = model_of(runs / "one"), model_of(runs / "two")
    assert_same_model(one, two)
    oldest = CheckpointStore(runs / "one" / CHECKPOINT_DIR).paths("step")[-1]  # step 10
    assert not torch.equal(one["0.weight"], load_checkpoint(oldest)["model"]["0.weight"])


def test_a_run_resumes_on_another_number_of_processes(runs):
    one = model_of(runs / "one")
    assert_same_model(model_of(runs / "two-then-one"), one)
    assert_same_model(model_of(runs / "one-then-two"), one)


def test_two_nodes_meeting_at_a_rendezvous_train_as_one_process(runs, tmp_path):
    """The README's several-machines command, both "machines" on this one."""
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1"]
    node += ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=metagrad"]
    args = ["-m", "metagrad", *train_args(tmp_path / "run", 20)]
    nodes = [
        subprocess.Popen([*node, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        for _ in range(2)
    ]
    for process in nodes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr.decode()
    assert_same_model(model_of(tmp_path / "run"), model_of(runs / "one"))


USER_MODEL = """
from torch import nn


def make_net(num_classes, in_channels=1):
    return nn.Sequential(  # no bias before batch norm: its gradient is rounding noise, which
        nn.Conv2d(in_channels, 4, 3, padding=1, bias=False),  # Adam would blow up to lr steps
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 12 * 12, num_classes),
    )
"""


def test_a_users_batch_norm_running_statistics_are_the_same_on_two_processes(tmp_path):
    """The per-task batch statistics of every process are gathered in task order, so the
    running statistics move exactly as in one process."""
    (tmp_path / "user_net.py").write_text(USER_MODEL)
    generator = np.random.default_rng(0)
    for c in range(20):
        folder = tmp_path / "images" / f"class-{c:02d}"
        folder.mkdir(parents=True)
        for i in range(4):
            pixels = generator.integers(0, 256, (12, 12), dtype=np.uint8)
            Image.fromarray(pixels, "L").save(folder / f"{i}.png")
    settings = [
        *("model.name=user_net:make_net", "task.dataset=folder", "task.rotations=[]"),
        *(f"task.data_root={tmp_path / 'images'}", "task.image_size=12", "task.n_way=3"),
        *("task.n_query=2", "train.meta_batch_size=5", "train.strategy=loop"),
        *("train.iterations=6", "train.val_every=6", "train.val_tasks=3", "train.ckpt_every=3"),
        *("eval.batch_norm=running", "eval.num_tasks=4", "eval.n_query=2"),
    ]
    env = {**ENV, "PYTHONPATH": str(tmp_path)}
    for nproc in (1, 2):
        args = ["train", "maml-omniglot-5w1s", "--run-dir", str(tmp_path / f"run{nproc}")]
        done = subprocess.run(
            command(nproc, *args, "--no-progress", "--set", *settings),
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
    one, two = model_of(tmp_path / "run1"), model_of(tmp_path / "run2")
    assert one["1.num_batches_tracked"] == two["1.num_batches_tracked"] == 6 * 5 * 2
    assert not torch.equal(one["1.running_mean"], torch.zeros(4))
    assert_same_model(one, two)


def test_two_processes_log_and_save_once(runs):
    lines = [json.loads(line) for line in (runs / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if line["split"] == "train"] == [5, 10, 15, 20]
    assert [line["step"] for line in lines if line["split"] == "val"] == [10, 20]
    assert sorted(p.name for p in runs.glob("two/eval-*.json")) == [
        "eval-test-best-5shot-2steps.json"
    ]


def evaluated_on_one_and_two(run_dir: Path) -> list[dict]:
    """The results of `metagrad eval` on 1 and on 2 processes, each in a file of its own."""
    done = [metagrad(n, "eval", str(run_dir), "--checkpoint", "last") for n in (1, 2)]
    saved = [
        line.split()[-1]
        for line in (done[0].stdout + done[1].stdout).splitlines()
        if line.startswith("saved ")
    ]
    assert len(saved) == 2 and saved[0] != saved[1]
    return [json.loads(Path(path).read_text()) for path in saved]


def test_sharded_evaluation_equals_one_process_exactly(runs):
    results = evaluated_on_one_and_two(runs / "one")
    assert results[0]["num_tasks"] == results[1]["num_tasks"] == 50
    assert results[0]["mean"] == results[1]["mean"]
    assert results[0]["ci95"] == results[1]["ci95"]


def test_a_meta_batch_smaller_than_the_processes_is_refused(tmp_path):
    done = metagrad(
        2,
        "train",
        "maml-sinusoid-5shot",
        "--run-dir",
        str(tmp_path / "run"),
        "--set",
        "train.meta_batch_size=1",
        check=False,
    )
    assert done.returncode != 0
    assert "train.meta_batch_size = 1 is smaller than the 2 processes" in done.stderr
    assert done.stderr.count("metagrad: error:") == 1  # said once, by rank 0


def _worker(launcher: int, rank: int) -> int:
    """The pid of the worker process of `rank` that the torchrun process `launcher` started."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(stat.parent.name)
    raise AssertionError(f"no rank {rank} under {launcher}")


def _wait_for_checkpoint(run_dir: Path, process: subprocess.Popen, kind: str) -> None:
    """Until `process` has saved a checkpoint of `kind` after step 0."""
    deadline = time.monotonic() + 120
    while not any(CheckpointStore(run_dir / CHECKPOINT_DIR).steps(kind)):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)


def test_a_killed_rank_ends_the_run_in_bounded_time_and_the_checkpoint_resumes(tmp_path):
    run_dir = tmp_path / "run"
    process = start_training(run_dir)
    _wait_for_checkpoint(run_dir, process, "step")
    os.kill(_worker(process.pid, 1), signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = process.communicate(timeout=KILLED_RANK_SECONDS)
    assert time.monotonic() - killed < KILLED_RANK_SECONDS
    assert process.returncode != 0
    assert "local_rank: 1" in stderr and "Signal 9" in stderr  # torchrun names the dead rank
    assert "metagrad: error: rank 0 lost contact with the other processes" in stderr
    step = CheckpointStore(run_dir / CHECKPOINT_DIR).load("last")["step"]
    train(1, run_dir, step + 5, resume=True)
    assert CheckpointStore(run_dir / CHECKPOINT_DIR).load("last")["step"] == step + 5


def test_sigterm_to_the_launcher_saves_once_and_exits(tmp_path):
    run_dir = tmp_path / "run"
    process = start_training(run_dir, "train.ckpt_every=1000000")
    _wait_for_checkpoint(run_dir, process, "best")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=KILLED_RANK_SECONDS)
    assert process.returncode != 0
    assert stderr.count("stopped by SIGTERM") == 1, stderr
    store = CheckpointStore(run_dir / CHECKPOINT_DIR)
    assert store.load("last")["step"] > 10


def test_a_sweep_runs_each_cell_as_a_torchrun_group(tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "maml-sinusoid-5shot", "train.seed=0,1", "--nproc-per-node", "2"]
    settings = [*SETTINGS, "train.iterations=20"]
    done = metagrad(1, *args, "--out", str(out), "--no-progress", "--set", *settings)
    assert "2 finished" in done.stdout
    rows = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    assert [row["status"] for row in rows] == ["finished", "finished"]
    for row in rows:  # rank 0 alone logged: one line per logging step
        lines = (Path(row["run"]) / "metrics.jsonl").read_text().splitlines()
        steps = [json.loads(line)["step"] for line in lines if '"train"' in line]
        assert steps == sorted(set(steps)) and steps
        log = (out / "logs" / f"{row['cell']}.log").read_text()
        assert log.count("training from step 0 to 20") == 1  # rank 0 alone prints


DIVERGED = """
import sys

import torch

from metagrad.errors import DistributedError
from metagrad.execution.distributed import exit_process, init_world

world = init_world(torch.device("cpu"))
params = [torch.ones(3, 4), torch.zeros(5)]
world.check_same(params, step=7)  # the same everywhere: nothing to say
if world.rank == 1:
    params[0][1, 2] += 1e-6
try:
    world.check_same(params, step=8)
except DistributedError as err:
    print(f"rank {world.rank}: {err}", file=sys.stderr, flush=True)
exit_process(0)
"""


def test_a_diverged_rank_is_an_error_naming_it(tmp_path):
    script = tmp_path / "diverged.py"
    script.write_text(DIVERGED)
    done = subprocess.run(
        [*TORCHRUN, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for rank in (0, 1):
        said = f"rank {rank}: the parameters of rank 1 differ from rank 0's at outer step 8"
        assert said in done.stderr


RL_SETTINGS = [
    "train.meta_batch_size=5",  # shared 3 + 2
    "train.ckpt_every=2",
    "rl.rollouts=4",
    "rl.horizon=15",
    "model.hidden=[16]",
    "eval.num_tasks=5",
    "rl.eval_rollouts=4",
]


def rl_train(nproc: int, run_dir: Path, iterations: int, *, resume: bool = False):
    where = ["--resume"] if resume else ["maml-trpo-navigation2d", "--run-dir"]
    settings = [*RL_SETTINGS, f"train.iterations={iterations}"]
    return metagrad(nproc, "train", *where, str(run_dir), "--no-progress", "--set", *settings)


@pytest.fixture(scope="module")
def rl_runs(tmp_path_factory):
    """MAML-TRPO on 2D navigation from the command line: 4 iterations in one process, in two,
    and 2 in two then 2 more in one."""
    root = tmp_path_factory.mktemp("distributed-rl")
    rl_train(1, root / "one", 4)
    rl_train(2, root / "two", 4)
    rl_train(2, root / "two-then-one", 2)
    rl_train(1, root / "two-then-one", 4, resume=True)
    return root


def rl_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]


def untimed(lines: list[dict]) -> list[dict]:
    timings = ("env_steps_per_s", "seconds_per_iteration")
    return [{k: v for k, v in line.items() if k not in timings} for line in lines]


def test_meta_rl_runs_on_two_processes_and_resumes_on_one(rl_runs):
    """From the command line (float32). The first iteration's episodes are the same; later the
    policies part by float32 rounding, which TRPO's conjugate gradient amplifies (a relative
    1e-7 in F·g became 1e-3 in the step direction): the exact comparison is the float64 one
    below."""
    one, two = rl_lines(rl_runs / "one"), rl_lines(rl_runs / "two")
    assert [line["step"] for line in two] == [1, 2, 3, 4]  # rank 0 alone logs
    for key in ("support_return", "query_return"):
        assert two[0][key] == pytest.approx(one[0][key], rel=1e-5)
    resumed = rl_lines(rl_runs / "two-then-one")
    assert [line["step"] for line in resumed] == [1, 2, 3, 4]
    assert untimed(resumed[:2]) == untimed(two[:2])  # the same two processes' iterations
    state = CheckpointStore(rl_runs / "two-then-one" / CHECKPOINT_DIR).load("last")
    assert state["step"] == 4 and state["best"]["step"] in range(4)


RL_WORLD = """
import sys

import torch

from metagrad.execution.distributed import exit_process, init_world
from metagrad.rl import MAMLTRPO, PPO, Navigation2D, train_maml

world = init_world(torch.device("cpu"))
algorithms = {
    "trpo": MAMLTRPO(),
    "promp": MAMLTRPO(ppo=PPO(), lvc=True, inner_kl_penalty=5e-4),
}
run = train_maml(
    Navigation2D(horizon=15),
    int(sys.argv[3]),
    meta_batch=5,
    rollouts=4,
    hidden=(16,),
    algorithm=algorithms[sys.argv[2]],
    dtype=torch.float64,
    world=world,
)
if world.is_main:
    history = [(m.pre_return, m.post_return, m.kl, m.env_steps) for m in run.history]
    torch.save({"params": run.params, "history": history}, sys.argv[1])
exit_process(0)
"""


@pytest.mark.parametrize(("outer", "iterations", "atol"), [("trpo", 1, 1e-7), ("promp", 4, 1e-12)])
def test_meta_rl_on_two_processes_trains_the_policy_of_one(tmp_path, outer, iterations, atol):
    """Float64, through the Python API: each process rolls out its tasks with the episodes one
    process gives them, and TRPO's (or PPO's) loss, KL, gradient and Fisher-vector products are
    combined over the processes, so the policy is the same. ProMP's Adam steps keep it equal to
    1e-15 over 4 iterations. TRPO's conjugate gradient (damping 1e-5) amplifies the order of
    summation: measured 3e-9 after one step, 1.5e-7 after two, 1e-5 after three, so one."""
    script = tmp_path / "rl_world.py"
    script.write_text(RL_WORLD)
    results = {}
    for nproc in (1, 2):
        out = tmp_path / f"{nproc}.pt"
        launcher = [sys.executable] if nproc == 1 else TORCHRUN
        done = subprocess.run(
            [*launcher, str(script), str(out), outer, str(iterations)],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        results[nproc] = torch.load(out)
    for name, value in results[1]["params"].items():
        torch.testing.assert_close(results[2]["params"][name], value, rtol=0, atol=atol)
    for a, b in zip(results[1]["history"], results[2]["history"], strict=True):
        assert a[3] == b[3]  # environment steps of the whole meta-batch
        assert b[:2] == pytest.approx(a[:2], rel=1e-12)  # returns before and after adapting
        assert b[2] == pytest.approx(a[2], rel=1e-6)  # the KL of the step taken
    assert not torch.equal(results[1]["params"]["log_std"], torch.zeros(2, dtype=torch.float64))


def test_meta_rl_evaluation_shared_over_two_processes_equals_one(rl_runs):
    results = evaluated_on_one_and_two(rl_runs / "one")
    assert results[0]["num_tasks"] == results[1]["num_tasks"] == 5
    for key in ("mean", "ci95"):
        for name in ("return", "random_init_return"):
            assert results[1][key][name] == pytest.approx(results[0][key][name], rel=1e-5)
