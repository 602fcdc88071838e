"""MAML++ against a reference written in this file: plain `torch.autograd.grad(create_graph=True)`
over plain functional layers, in float64, on the sinusoid MLP and on a Conv-4 with batch norm;
its schedules (MSL, DA), the cosine outer learning rate, and resuming a run."""

import math

import pytest
import test_family
import torch
import torch.nn.functional as F
from test_family import STRATEGIES, assert_gradients_equal, mlp_case

from metagrad import train as train_module
from metagrad.algorithms import BUILT_IN, MAML, MAMLPlusPlus, build_algorithm
from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore
from metagrad.config import BUILT_IN_ALGORITHMS, FIRST_ORDER_ALGORITHMS, load_config
from metagrad.data import splits_from_tensors
from metagrad.errors import ConfigError
from metagrad.evaluate import adapted_metrics
from metagrad.execution import ExecutionPlan, MetaLearner
from metagrad.objectives import REGRESSION
from metagrad.train import fit, lr_factor

case = test_family.case  # the fixture: the sinusoid MLP and a Conv-4 with batch norm
STEPS = 2
MSL_STEPS, AT = 10, 3
"""The MSL weights at outer step 3 of 10 with 2 inner steps: 1/2 − 3/20 and the rest."""
WEIGHTS = (0.35, 0.65)


def norm_names(case):
    """The batch-norm weights and biases of the test Conv-4 (none in the MLP)."""
    if "features.1.weight" not in dict(case.model.named_parameters()):
        return []
    return [f"features.{3 * b + 1}.{kind}" for b in range(4) for kind in ("weight", "bias")]


def random_extra(case, generator):
    """Learned rates around the case's lr and per-step BN parameters away from θ's."""
    theta = dict(case.model.named_parameters())
    norms = norm_names(case)
    rates = {
        (s, k): case.lr * (0.5 + torch.rand((), generator=generator, dtype=torch.float64))
        for s in range(STEPS)
        for k in theta
        if k not in norms
    }
    copies = {
        (c, k): theta[k].detach() + 0.3 * torch.rand(theta[k].shape, generator=generator).double()
        for c in range(1, STEPS + 1)
        for k in norms
    }
    return rates, copies


def reference(case, rates, copies, *, weights=WEIGHTS, first_order=False):
    """The MAML++ meta-gradient by plain autograd (names as metagrad's: `extra.lr.<s>.<name>`,
    `extra.bn.<k>.<name>`) and the meta-loss. Step s adapts every non-BN parameter at rate
    `rates[s, name]`; the BN parameters at φ_k are `copies[k, name]` (θ's at k = 0); the
    meta-loss is Σ_k weights[k−1]·(query loss at φ_k), or the last one's if `weights` is None."""
    theta = {k: p.detach().clone().requires_grad_() for k, p in case.model.named_parameters()}
    alpha = {key: r.detach().clone().requires_grad_() for key, r in rates.items()}
    beta = {key: c.detach().clone().requires_grad_() for key, c in copies.items()}
    norms = norm_names(case)
    adapted = [k for k in theta if k not in norms]
    meta_loss = 0
    for xs, ys, xq, yq in zip(*case.batch.tensors()):
        fast, query = dict(theta), []
        for s in range(STEPS):
            support = case.loss(case.forward(fast, xs), ys)
            grads = torch.autograd.grad(
                support, [fast[k] for k in adapted], create_graph=not first_order, retain_graph=True
            )
            fast = {
                **{k: fast[k] - alpha[s, k] * g for k, g in zip(adapted, grads)},
                **{k: beta[s + 1, k] for k in norms},
            }
            query.append(case.loss(case.forward(fast, xq), yq))
        meta_loss = meta_loss + (
            sum(w * q for w, q in zip(weights, query)) if weights else query[-1]
        )
    meta_loss = meta_loss / case.batch.num_tasks
    names = [
        *theta,
        *(f"extra.lr.{s}.{k}" for s, k in alpha),
        *(f"extra.bn.{c}.{k}" for c, k in beta),
    ]
    wrt = [*theta.values(), *alpha.values(), *beta.values()]
    grads = torch.autograd.grad(meta_loss, wrt, allow_unused=True)  # first order: θ's BN unused
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, wrt)]
    return dict(zip(names, grads)), meta_loss.item()


def learner_with(algorithm, case, strategy, rates, copies):
    learner = MetaLearner(algorithm, case.model, case.objective, strategy)
    with torch.no_grad():
        for (s, k), rate in rates.items():
            learner.meta.extra[f"lr.{s}.{k}"].copy_(rate)
        for (c, k), value in copies.items():
            learner.meta.extra[f"bn.{c}.{k}"].copy_(value)
    return learner


def mamlpp(case, **kwargs):
    return MAMLPlusPlus(inner_steps=STEPS, inner_lr=case.lr, msl_steps=MSL_STEPS, **kwargs)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_meta_gradient_equals_plain_autograd(case, strategy, first_order):
    rates, copies = random_extra(case, torch.Generator().manual_seed(0))
    expected, loss = reference(case, rates, copies, first_order=first_order)
    algorithm = mamlpp(case, first_order=first_order).at_step(AT)
    learner = learner_with(algorithm, case, strategy, rates, copies)
    assert learner.algorithm.normalisation == tuple(norm_names(case))
    grads, metrics = learner.meta_gradient(case.batch)
    assert_gradients_equal(grads.named(), expected)
    assert metrics["loss"].mean().item() == pytest.approx(loss, rel=1e-12)
    assert any(k.startswith("query_") for k in metrics)
    assert any(k.startswith("support_") for k in metrics)
    norms = norm_names(case)
    for k, grad in grads.named().items():
        # BNWB: θ's own BN parameters only serve the support forward at φ_0, which a first-order
        # meta-gradient does not differentiate
        assert (grad.abs().sum() == 0) == (first_order and k in norms), k


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_recomputed_inner_steps_differentiate_the_rates_and_bn_copies(case, strategy):
    """The per-step meta-parameters travel in the inner optimizer's state: a step recomputed in
    the backward pass (`checkpoint_inner`) differentiates them too."""
    rates, copies = random_extra(case, torch.Generator().manual_seed(4))
    expected, _ = reference(case, rates, copies)
    plan = ExecutionPlan(strategy, None, checkpoint_inner=True)
    learner = learner_with(mamlpp(case).at_step(AT), case, plan, rates, copies)
    assert_gradients_equal(learner.meta_gradient(case.batch)[0].named(), expected)


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_with_every_switch_off_it_is_maml(case, gradient_of, strategy):
    off = MAMLPlusPlus(STEPS, case.lr, lslr=False, msl=False, per_step_bn=False)
    grads, _ = gradient_of(off, case.model, case.objective, case.batch, strategy)
    expected, _ = gradient_of(MAML(STEPS, case.lr), case.model, case.objective, case.batch, "loop")
    assert_gradients_equal(grads, expected)


def test_the_learned_rate_gradient_equals_central_finite_differences(tiny_mlp, sinusoid_batch):
    case, eps = mlp_case(tiny_mlp[0], sinusoid_batch), 1e-6
    rates, copies = random_extra(case, torch.Generator().manual_seed(1))
    learner = learner_with(mamlpp(case).at_step(AT), case, "loop", rates, copies)
    grads = learner.meta_gradient(sinusoid_batch)[0].named()

    def meta_loss(key, shift):
        return reference(case, {**rates, key: rates[key] + shift}, copies)[1]

    for key in [(0, "2.weight"), (1, "0.bias"), (1, "4.weight")]:
        difference = (meta_loss(key, eps) - meta_loss(key, -eps)) / (2 * eps)
        assert grads[f"extra.lr.{key[0]}.{key[1]}"].item() == pytest.approx(difference, rel=1e-6)


def test_msl_weights_start_uniform_sum_to_one_and_anneal_to_the_last_step():
    algorithm = MAMLPlusPlus(inner_steps=5, msl_steps=100)
    assert algorithm.loss_weights() == pytest.approx((0.2,) * 5)
    for step in range(100):
        weights = algorithm.at_step(step).loss_weights()
        assert sum(weights) == pytest.approx(1, abs=1e-12)
        others = max(0.2 - step / 500, 0.006)  # 1/S − t/(S·msl_steps), floored at 0.03/S
        assert weights == pytest.approx((others,) * 4 + (1 - 4 * others,))
    assert algorithm.at_step(50).loss_weights() == pytest.approx((0.1,) * 4 + (0.6,))
    assert algorithm.at_step(99).loss_weights() == pytest.approx((0.006,) * 4 + (0.976,))
    assert algorithm.at_step(100).loss_weights() is None  # the last step's loss alone
    assert algorithm.at_step(10**6).loss_weights() is None
    assert MAMLPlusPlus(inner_steps=5, msl=False).loss_weights() is None
    assert MAMLPlusPlus(inner_steps=1).loss_weights() is None


def test_after_the_msl_phase_the_meta_gradient_is_the_last_steps(case):
    rates, copies = random_extra(case, torch.Generator().manual_seed(2))
    expected, _ = reference(case, rates, copies, weights=None)
    learner = learner_with(mamlpp(case).at_step(MSL_STEPS), case, "loop", rates, copies)
    assert_gradients_equal(learner.meta_gradient(case.batch)[0].named(), expected)


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_derivative_order_annealing_switches_to_second_order_at_the_stated_step(
    case, gradient_of, strategy
):
    annealed = MAMLPlusPlus(
        STEPS, case.lr, lslr=False, msl=False, per_step_bn=False, first_order_steps=3
    )
    assert [annealed.at_step(step).second_order for step in range(5)] == [0, 0, 0, 1, 1]
    run = case.model, case.objective, case.batch
    first = gradient_of(MAML(STEPS, case.lr, first_order=True), *run, "loop")[0]
    second = gradient_of(MAML(STEPS, case.lr), *run, "loop")[0]
    assert any(not torch.allclose(first[k], second[k]) for k in first)
    assert_gradients_equal(gradient_of(annealed.at_step(2), *run, strategy)[0], first)
    assert_gradients_equal(gradient_of(annealed.at_step(3), *run, strategy)[0], second)
    always_first = MAMLPlusPlus(STEPS, case.lr, lslr=False, msl=False, first_order=True)
    assert not always_first.at_step(10**6).second_order


def test_test_time_adaptation_uses_the_learned_per_step_rates_and_bn(case):
    rates, copies = random_extra(case, torch.Generator().manual_seed(3))
    learner = learner_with(mamlpp(case), case, "loop", rates, copies)
    norms = norm_names(case)
    metric = "mse" if case.objective is REGRESSION else "loss"
    for lr, scale in [(None, 1.0), (case.lr / 2, 0.5)]:
        metrics = adapted_metrics(learner, [case.batch], steps=3, lr=lr)
        for task, (xs, ys, xq, yq) in enumerate(zip(*case.batch.tensors())):
            fast = {k: p.detach() for k, p in case.model.named_parameters()}
            for step in range(4):
                query = case.loss(case.forward(fast, xq), yq)
                torch.testing.assert_close(metrics[metric][task, step], query)
                grads = torch.func.grad(lambda f, xs=xs, ys=ys: case.loss(case.forward(f, xs), ys))(
                    fast
                )
                at, copy = min(step, STEPS - 1), min(step + 1, STEPS)  # past training: the last
                fast = {
                    **{
                        k: p - scale * rates[at, k] * grads[k]
                        for k, p in fast.items()
                        if k not in norms
                    },
                    **{k: copies[copy, k] for k in norms},
                }


def batch_norm_inputs(params, x):
    """The input of each batch-norm layer of the test Conv-4, by plain functional layers."""
    h, inputs = x, []
    for block in range(4):
        conv, norm = f"features.{3 * block}.", f"features.{3 * block + 1}."
        h = F.conv2d(h, params[conv + "weight"], params[conv + "bias"], stride=2, padding=1)
        inputs.append(h)
        weight, bias = params[norm + "weight"], params[norm + "bias"]
        h = F.relu(F.batch_norm(h, None, None, weight, bias, training=True, eps=1e-3))
    return inputs


def expected_statistics(case, rates, copies, meta_batches):
    """BNRS by hand: per batch-norm layer, `[S + 1, C]` running means and variances and the
    forward passes counted per φ_k, after `meta_batches` meta-gradients with MSL on. Per task,
    in order: the support forward passes at φ_0..φ_{S−1}, then the query ones at φ_S and
    φ_1..φ_{S−1}; each moves row k by momentum 0.1 towards the batch mean and unbiased
    variance, from PyTorch's initial statistics."""
    theta = {k: p.detach() for k, p in case.model.named_parameters()}
    norms = norm_names(case)
    adapted = [k for k in theta if k not in norms]
    mean = [torch.zeros(STEPS + 1, 4, dtype=torch.float64) for _ in range(4)]
    var = [torch.ones(STEPS + 1, 4, dtype=torch.float64) for _ in range(4)]
    counts = torch.zeros(STEPS + 1, dtype=torch.long)

    @torch.no_grad()
    def moved(at, params, x):
        counts[at] += 1
        for layer, h in enumerate(batch_norm_inputs(params, x)):
            mean[layer][at] = 0.9 * mean[layer][at] + 0.1 * h.mean((0, 2, 3))
            var[layer][at] = 0.9 * var[layer][at] + 0.1 * h.var((0, 2, 3), correction=1)

    for _ in range(meta_batches):
        for xs, ys, xq, _ in zip(*case.batch.tensors()):
            path = [{k: v.clone().requires_grad_(k in adapted) for k, v in theta.items()}]
            for s in range(STEPS):
                moved(s, path[s], xs)
                support = case.loss(case.forward(path[s], xs), ys)
                grads = torch.autograd.grad(support, [path[s][k] for k in adapted])
                step = {k: path[s][k] - rates[s, k] * g for k, g in zip(adapted, grads)}
                path.append({**step, **{k: copies[s + 1, k] for k in norms}})
            for at in (STEPS, *range(1, STEPS)):
                moved(at, path[at], xq)
    return mean, var, counts


@pytest.mark.parametrize("strategy", ["loop", "vmap", "hybrid"])
def test_bnrs_keeps_one_set_of_running_statistics_per_inner_step(case, strategy):
    rates, copies = random_extra(case, torch.Generator().manual_seed(5))
    algorithm = mamlpp(case, per_step_statistics=True).at_step(AT)
    learner = learner_with(algorithm, case, strategy, rates, copies)
    if not norm_names(case):  # the MLP: nothing to keep
        assert not list(learner.model.buffers())
        return
    learner.meta_gradient(case.batch)
    learner.meta_gradient(case.batch)
    mean, var, counts = expected_statistics(case, rates, copies, meta_batches=2)
    tasks = case.batch.num_tasks
    assert counts.tolist() == [2 * tasks, 4 * tasks, 2 * tasks]  # φ_1: support and MSL query
    for layer in range(4):
        bn = learner.model.get_submodule(f"features.{3 * layer + 1}")
        torch.testing.assert_close(bn.running_mean, mean[layer], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(bn.running_var, var[layer], rtol=1e-10, atol=1e-12)
        assert torch.equal(bn.num_batches_tracked, counts)


def test_bnrs_statistics_of_step_k_normalise_the_network_at_phi_k_in_evaluation(case):
    if not norm_names(case):
        pytest.skip("the MLP has no batch norm")
    generator = torch.Generator().manual_seed(6)
    rates, copies = random_extra(case, generator)
    learner = learner_with(mamlpp(case, per_step_statistics=True), case, "loop", rates, copies)
    layers = [learner.model.get_submodule(f"features.{3 * b + 1}") for b in range(4)]
    with torch.no_grad():
        for bn in layers:
            bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=generator))
            bn.running_var.copy_(0.5 + torch.rand(bn.running_var.shape, generator=generator))
    norms = norm_names(case)

    def forward(params, x, k):
        """The Conv-4 normalised with the statistics of row k."""
        h = x
        for block, bn in enumerate(layers):
            conv, norm = f"features.{3 * block}.", f"features.{3 * block + 1}."
            h = F.conv2d(h, params[conv + "weight"], params[conv + "bias"], stride=2, padding=1)
            mean, var = bn.running_mean[k], bn.running_var[k]
            h = F.batch_norm(h, mean, var, params[norm + "weight"], params[norm + "bias"], eps=1e-3)
            h = F.relu(h)
        return F.linear(h.mean(dim=(2, 3)), params["head.weight"], params["head.bias"])

    metrics = adapted_metrics(learner, [case.batch], steps=3, batch_norm="running")
    transductive = adapted_metrics(learner, [case.batch], steps=3)
    assert not torch.allclose(metrics["loss"], transductive["loss"])
    for task, (xs, ys, xq, yq) in enumerate(zip(*case.batch.tensors())):
        fast = {k: p.detach() for k, p in case.model.named_parameters()}
        for step in range(4):
            k = min(step, STEPS)  # past training: the last row
            torch.testing.assert_close(
                metrics["loss"][task, step], case.loss(forward(fast, xq, k), yq)
            )
            grads = torch.func.grad(lambda f, xs=xs, ys=ys, k=k: case.loss(forward(f, xs, k), ys))(
                fast
            )
            at, copy = min(step, STEPS - 1), min(step + 1, STEPS)
            fast = {
                **{k: p - rates[at, k] * grads[k] for k, p in fast.items() if k not in norms},
                **{k: copies[copy, k] for k in norms},
            }


def test_cosine_annealing_of_the_outer_learning_rate():
    config = load_config(
        "mamlpp-omniglot-5w1s", ["train.iterations=1000", "train.outer_lr_min=1e-5"]
    )
    floor = 1e-5 / 1e-3
    assert lr_factor(config, 0) == 1.0
    assert lr_factor(config, 500) == pytest.approx((1 + floor) / 2)
    assert lr_factor(config, 1000) == pytest.approx(floor)
    for step in (1, 137, 250, 999):
        expected = floor + (1 - floor) * (1 + math.cos(math.pi * step / 1000)) / 2
        assert lr_factor(config, step) == pytest.approx(expected, rel=1e-15)
    assert lr_factor(load_config("maml-omniglot-5w1s"), 500) == 1.0
    with pytest.raises(ConfigError, match="outer_lr_min"):
        load_config("mamlpp-omniglot-5w1s", ["train.outer_lr_min=0.01"])


TINY = [
    "task.dataset=folder",
    "task.n_way=3",
    "task.n_query=2",
    "task.rotations=[]",
    "task.image_size=12",
    "model.hidden=[4]",
    "model.pool=stride",
    "algorithm.inner_steps=2",
    "train.meta_batch_size=2",
    "train.strategy=loop",
    "train.val_every=5",
    "train.val_tasks=2",
    "train.log_every=5",
    "train.ckpt_every=5",
    "eval.num_tasks=2",
    "eval.n_query=2",
    "eval.inner_steps=2",
]
"""A Conv-4 of 4 filters on 12×12 images (`tiny_images`), trained in a few seconds."""


def tiny_images():
    generator = torch.Generator().manual_seed(0)

    def classes(prefix, count):
        return {f"{prefix}{i}": torch.rand(4, 1, 12, 12, generator=generator) for i in range(count)}

    return splits_from_tensors(train=classes("a", 8), val=classes("b", 4), test=classes("c", 4))


def test_mamlpp_checkpoints_its_rates_and_bn_and_resumes_bit_exactly(tmp_path, monkeypatch):
    """A crash at step 7 resumes from the checkpoint of step 5, between the schedules'
    switches (MSL ends at step 7, DA at step 6) and under the cosine outer lr; the per-step
    running statistics (BNRS) validate the run and are resumed too."""
    images = tiny_images()
    overrides = [
        *TINY,
        "algorithm.kwargs={msl_steps: 7, first_order_steps: 6, per_step_statistics: true}",
        "eval.batch_norm=running",
    ]
    config = load_config("mamlpp-omniglot-5w1s", [*overrides, "train.iterations=10"])

    def run(folder, resume=False):
        return fit(config, tmp_path / folder, resume=resume, progress=False, images=images)

    whole = run("whole")
    check = train_module.nonfinite

    def crashing(step, *args):
        if step == 7:
            raise RuntimeError("simulated crash")
        return check(step, *args)

    monkeypatch.setattr(train_module, "nonfinite", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run("part")
    monkeypatch.setattr(train_module, "nonfinite", check)
    part = run("part", resume=True)
    a, b = (CheckpointStore(folder / CHECKPOINT_DIR).load("last") for folder in (whole, part))
    norms = [k for k in a["model"] if k.startswith("features.") and a["model"][k].dim() == 1]
    norms = [k for k in norms if int(k.split(".")[1]) % 3 == 1 and k.endswith(("weight", "bias"))]
    assert {k for k in a["extra"] if k.startswith("bn.")} == {
        f"bn.{c}.{k}" for c in (1, 2) for k in norms
    }
    assert any(not torch.all(v == 0.1) for k, v in a["extra"].items() if k.startswith("lr."))
    buffers = [k for k in a["model"] if ".running_" in k or k.endswith(".num_batches_tracked")]
    assert len(a["optimizer"]["state"]) == len(a["model"]) - len(buffers) + len(a["extra"])
    assert a["scheduler"]["last_epoch"] == 10
    for k in norms:  # one row of running statistics per φ_k, k = 0..2; MSL for 7 steps
        layer = k.rsplit(".", 1)[0]
        for stat in ("running_mean", "running_var"):
            assert a["model"][f"{layer}.{stat}"].shape == (3, 4)
        assert a["model"][f"{layer}.num_batches_tracked"].tolist() == [20, 20 + 7 * 2, 20]
    for part_name in ("model", "extra"):
        for k in a[part_name]:
            assert torch.equal(a[part_name][k], b[part_name][k]), k
    lines = [(folder / "metrics.jsonl").read_text() for folder in (whole, part)]
    assert lines[0] == lines[1]


def test_the_execution_plan_is_chosen_for_the_second_order_steps(tmp_path, monkeypatch):
    seen = []

    def choose_plan(self, batch, choose=None):  # measures once, then keeps the plan
        if self.plan.strategy == "auto":
            seen.append((self.algorithm.step, self.algorithm.second_order))
            self.plan = ExecutionPlan("loop")
        return self.plan

    monkeypatch.setattr(MetaLearner, "choose_plan", choose_plan)
    overrides = [
        *TINY,
        "train.strategy=auto",
        "train.iterations=4",
        "algorithm.kwargs={first_order_steps: 3, per_step_statistics: true}",
    ]
    config = load_config("mamlpp-omniglot-5w1s", overrides)
    fit(config, tmp_path / "run", progress=False, images=tiny_images())
    assert seen == [(3, True)]


PRESETS = ("mamlpp-omniglot-5w1s", "mamlpp-omniglot-20w1s", "mamlpp-miniimagenet-5w1s")


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_builds_mamlpp_from_its_config(preset):
    config = load_config(preset)
    built = build_algorithm(config)
    assert type(built) is MAMLPlusPlus
    assert (built.inner_steps, built.inner_lr) == (5, config.algorithm.inner_lr)
    assert built.lslr and built.msl and built.per_step_bn and built.msl_steps > 0
    assert not built.per_step_statistics and config.eval.batch_norm == "transductive"
    assert config.train.outer_lr_decay == "cosine"


def test_settings_come_from_the_config_and_bad_ones_are_refused():
    assert "mamlpp" in BUILT_IN_ALGORITHMS and "mamlpp" in FIRST_ORDER_ALGORITHMS
    assert BUILT_IN["mamlpp"] is MAMLPlusPlus
    config = load_config(
        "mamlpp-omniglot-5w1s",
        ["algorithm.kwargs={lslr: false, msl_steps: 7}", "algorithm.first_order=true"],
    )
    built = build_algorithm(config)
    assert (built.lslr, built.msl_steps, built.first_order) == (False, 7, True)
    for kwargs, message in [
        ("{msl_steps: -1}", "msl_steps = -1 must be >= 0"),
        ("{first_order_steps: -2}", "first_order_steps = -2 must be >= 0"),
        ("{msl_steps: 0}", "set msl = false"),
        ("{mls: true}", "could not be called"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_algorithm(load_config("mamlpp-omniglot-5w1s", [f"algorithm.kwargs={kwargs}"]))
    with pytest.raises(ConfigError, match="lslr = false"):
        build_algorithm(load_config("mamlpp-omniglot-5w1s", ["algorithm.inner_optimizer=adam"]))
    adam = ["algorithm.inner_optimizer=adam", "algorithm.kwargs={lslr: false}"]
    assert build_algorithm(load_config("mamlpp-omniglot-5w1s", adam)).inner_optimizer == "adam"
    with pytest.raises(ConfigError, match="inner_steps >= 1"):
        build_algorithm(load_config("mamlpp-omniglot-5w1s", ["algorithm.inner_steps=0"]))
