"""The benchmark's parts: identical inputs for every approach, peers that compute the same
meta-gradient, a table that flags disagreement."""

import os
import subprocess
import sys

import pytest
import torch

from metagrad.bench.peers import PEERS, installed
from metagrad.bench.runner import GRADIENT_TOLERANCE, format_table, relative_error
from metagrad.bench.settings import SETTINGS, setting_config, synthetic_batch
from metagrad.bench.worker import metagrad_step, peer_step
from metagrad.errors import ConfigError
from metagrad.execution.allocator import tune_allocator

SMALL = ["train.meta_batch_size=3", "task.n_query=2", "model.hidden=[4]"]


@pytest.mark.parametrize(
    ("setting", "image"), [("omniglot-5w1s", (1, 28, 28)), ("miniimagenet-5w1s", (3, 84, 84))]
)
def test_synthetic_batches_have_the_settings_shapes_and_are_seeded(setting, image):
    config = setting_config(setting)
    batch = synthetic_batch(config)
    tasks, task = config.train.meta_batch_size, config.task
    assert batch.x_support.shape == (tasks, task.n_way * task.k_shot, *image)
    assert batch.x_query.shape == (tasks, task.n_way * task.n_query, *image)
    assert set(batch.y_query[0].tolist()) == set(range(task.n_way))
    torch.testing.assert_close(synthetic_batch(config).x_query, batch.x_query, rtol=0, atol=0)


def test_every_setting_resolves_to_a_valid_config():
    for name in SETTINGS:
        setting_config(name)


@pytest.mark.parametrize("peer", list(PEERS))
@pytest.mark.parametrize("setting", ["omniglot-5w1s", "omniglot-5w1s-fo"])
def test_peers_compute_metagrads_meta_gradient(peer, setting):
    if not installed(peer):
        pytest.skip(f"{peer} is not installed (benchmarks/install-peers.sh)")
    config = setting_config(setting, SMALL)
    batch = synthetic_batch(config).to("cpu", torch.float64)
    reference = metagrad_step(config, batch, "loop")[0]()
    grads = peer_step(config, batch, peer)[0]()
    assert relative_error(grads, reference) < GRADIENT_TOLERANCE


@pytest.mark.parametrize("algorithm", ["anil", "metasgd"])
def test_learn2learn_computes_anil_and_metasgd_as_metagrad_does(algorithm):
    """learn2learn's ANIL (its MAML around the head) and MetaSGD, learned rates included."""
    if not installed("learn2learn"):
        pytest.skip("learn2learn is not installed (benchmarks/install-peers.sh)")
    config = setting_config("omniglot-5w1s", [*SMALL, f"algorithm.name={algorithm}"])
    batch = synthetic_batch(config).to("cpu", torch.float64)
    reference = metagrad_step(config, batch, "loop")[0]()
    grads = peer_step(config, batch, "learn2learn")[0]()
    assert relative_error(grads, reference) < GRADIENT_TOLERANCE


@pytest.mark.parametrize("peer", ["parallel-metalearn", "parallel-metalearn/sequential"])
@pytest.mark.parametrize(
    ("setting", "overrides"),
    [
        ("sinusoid", []),
        ("omniglot-5w1s", ["algorithm.inner_steps=2", "train.chunk_size=2"]),
    ],
)
def test_parallel_metalearn_computes_metagrads_meta_gradient(peer, setting, overrides):
    """Both its backends on the MLP, and over several inner steps with vmap in chunks smaller
    than the meta-batch."""
    if not installed(peer):
        pytest.skip(f"{peer} is not installed (benchmarks/install-peers.sh)")
    config = setting_config(setting, [*SMALL, *overrides])
    batch = synthetic_batch(config).to("cpu", torch.float64)
    reference = metagrad_step(config, batch, "loop")[0]()
    grads = peer_step(config, batch, peer)[0]()
    assert relative_error(grads, reference) < GRADIENT_TOLERANCE


@pytest.mark.parametrize("peer", ["higher", "torchopt", "parallel-metalearn"])
def test_peers_without_an_algorithm_say_so(peer):
    config = setting_config("omniglot-5w1s", [*SMALL, "algorithm.name=anil"])
    batch = synthetic_batch(config)
    with pytest.raises(ConfigError, match=f"the {peer} comparison writes MAML only, not.*anil"):
        peer_step(config, batch, peer)


def test_relative_error_and_the_table_flag_a_wrong_gradient():
    reference = [torch.ones(3), torch.ones(2)]
    assert relative_error(reference, reference) == 0
    assert relative_error([torch.ones(3), torch.zeros(2)], reference) == pytest.approx(0.4**0.5)
    rows = [
        {"approach": "loop", "median_s": 0.5, "tasks_per_s": 64.0, "peak_rss_mib": 400,
         "work_mib": 100, "grad_rel_error": 0.0, "speedup_vs_l2l": 2.0, "memory_vs_l2l": 1.1},
        {"approach": "vmap", "median_s": 1.0, "tasks_per_s": 32.0, "peak_rss_mib": 900,
         "work_mib": 600, "grad_rel_error": 1e-3},
        {"approach": "higher", "error": "not installed (pip install .[bench])"},
    ]  # fmt: skip
    table = format_table("omniglot-5w1s", "about", rows)
    assert "| loop | 0.5 | 64.0 | 400 | 100 | 2.00× | 1.10× | 0.0e+00 |" in table
    assert "1.0e-03 DISAGREES" in table
    assert "| higher | not installed" in table


def test_allocator_tuning_can_be_turned_off():
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    assert tune_allocator()
    code = "from metagrad.execution.allocator import tune_allocator; print(tune_allocator())"
    env = {**os.environ, "METAGRAD_DEFAULT_MALLOC": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "False"


def test_gradient_files_are_read_as_tensors_only(tmp_path, monkeypatch):
    from metagrad.bench import runner

    loads = []
    real_load = torch.load
    monkeypatch.setattr(runner.torch, "load", lambda *a, **k: loads.append(k) or real_load(*a, **k))
    rows = []
    for approach in (runner.REFERENCE, "batched"):
        path = tmp_path / f"{approach}.pt"
        torch.save([torch.ones(2)], path)
        rows.append({"approach": approach, "grads_file": str(path)})
    runner._compare_gradients(rows)
    assert rows[1]["grad_rel_error"] == 0
    assert loads and all(k.get("weights_only") is True for k in loads)
