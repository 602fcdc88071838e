"""ANIL, BOIL and Meta-SGD against references written in this file: plain
`torch.autograd.grad(create_graph=True)` over plain PyTorch ops, in float64, on the sinusoid MLP
(no parameter named `head.`: its last layer is the head) and on a Conv-4 with batch norm."""

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metagrad.algorithms import ANIL, BOIL, BUILT_IN, MetaParameters, MetaSGD, build_algorithm
from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore
from metagrad.config import BUILT_IN_ALGORITHMS, load_config
from metagrad.errors import ConfigError
from metagrad.evaluate import adapted_metrics
from metagrad.execution import MetaLearner, Network
from metagrad.models import Conv4, TaskBatchNorm
from metagrad.objectives import CLASSIFICATION, REGRESSION, Objective
from metagrad.tasks import TaskBatch
from metagrad.train import fit

STEPS = 2
STRATEGIES = ("loop", "vmap", "hybrid", "batched")
FAMILY = {"anil": ANIL, "boil": BOIL, "metasgd": MetaSGD}


@dataclass
class Case:
    """A network, its plain functional form and a meta-batch for it."""

    model: nn.Module
    forward: object
    loss: object
    objective: Objective
    batch: TaskBatch
    lr: float
    head: tuple[str, ...]

    def adapted_names(self, name: str) -> list[str]:
        """What the inner loop of `name` adapts: the head, the body, or everything."""
        names = [k for k, _ in self.model.named_parameters()]
        if name == "anil":
            return [k for k in names if k in self.head]
        if name == "boil":
            return [k for k in names if k not in self.head]
        return names


def mlp_forward(params, x):
    h = F.relu(F.linear(x, params["0.weight"], params["0.bias"]))
    h = F.relu(F.linear(h, params["2.weight"], params["2.bias"]))
    return F.linear(h, params["4.weight"], params["4.bias"])


def conv4_forward(params, x):
    """Conv-4 with stride-2 convolutions, batch norm on the batch in hand (eps 1e-3)."""
    h = x
    for block in range(4):
        conv, norm = f"features.{3 * block}.", f"features.{3 * block + 1}."
        h = F.conv2d(h, params[conv + "weight"], params[conv + "bias"], stride=2, padding=1)
        weight, bias = params[norm + "weight"], params[norm + "bias"]
        h = F.relu(F.batch_norm(h, None, None, weight, bias, training=True, eps=1e-3))
    return F.linear(h.mean(dim=(2, 3)), params["head.weight"], params["head.bias"])


def mlp_case(model, batch):
    """The sinusoid MLP: no parameter is named `head.`, so its last layer is the head."""
    return Case(model, mlp_forward, F.mse_loss, REGRESSION, batch, 0.1, ("4.weight", "4.bias"))


@pytest.fixture(params=["mlp", "conv4"])
def case(request, tiny_mlp):
    if request.param == "mlp":
        return mlp_case(tiny_mlp[0], request.getfixturevalue("sinusoid_batch"))
    torch.manual_seed(0)
    model = Conv4(1, 3, 12, hidden=4).double()
    with torch.no_grad():  # non-trivial batch-norm affine parameters
        for module in model.modules():
            if isinstance(module, TaskBatchNorm):
                module.weight.add_(torch.rand_like(module.weight) * 0.5)
                module.bias.add_(torch.rand_like(module.bias) * 0.5)
    batch = TaskBatch(
        torch.rand(3, 6, 1, 12, 12, dtype=torch.float64),
        torch.arange(3).repeat(2).expand(3, 6),
        torch.rand(3, 9, 1, 12, 12, dtype=torch.float64),
        torch.arange(3).repeat(3).expand(3, 9),
    )
    head = ("head.weight", "head.bias")
    return Case(model, conv4_forward, F.cross_entropy, CLASSIFICATION, batch, 0.3, head)


def reference(case, name, *, steps=STEPS, first_order=False, rates=None):
    """The meta-gradient of `name` by plain autograd, by parameter name (Meta-SGD's rates as
    `extra.lr.<name>`), and the meta-loss: the adapted parameters take `steps` SGD steps at
    `case.lr` (Meta-SGD: at `rates`, by default `case.lr` everywhere), the others stay θ."""
    theta = {k: p.detach().clone().requires_grad_() for k, p in case.model.named_parameters()}
    alpha = {}
    if name == "metasgd":
        rates = rates or {k: torch.full_like(p, case.lr) for k, p in theta.items()}
        alpha = {k: r.detach().clone().requires_grad_() for k, r in rates.items()}
    names = case.adapted_names(name)
    meta_loss = 0
    for xs, ys, xq, yq in zip(*case.batch.tensors()):
        fast = dict(theta)
        for _ in range(steps):
            support = case.loss(case.forward(fast, xs), ys)
            grads = torch.autograd.grad(
                support, [fast[k] for k in names], create_graph=not first_order, retain_graph=True
            )
            for k, g in zip(names, grads):
                fast[k] = fast[k] - (alpha[k] if alpha else case.lr) * g
        meta_loss = meta_loss + case.loss(case.forward(fast, xq), yq)
    meta_loss = meta_loss / case.batch.num_tasks
    grads = torch.autograd.grad(meta_loss, [*theta.values(), *alpha.values()])
    return dict(zip([*theta, *(f"extra.lr.{k}" for k in alpha)], grads)), meta_loss.item()


def algorithm(name, case, **kwargs):
    return FAMILY[name](inner_steps=STEPS, inner_lr=case.lr, **kwargs)


def assert_gradients_equal(grads, expected):
    assert grads.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(grads[k], expected[k], rtol=1e-10, atol=1e-12, msg=k)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", FAMILY)
def test_the_meta_gradient_equals_plain_autograd(case, gradient_of, name, strategy):
    expected, _ = reference(case, name)
    grads, _ = gradient_of(algorithm(name, case), case.model, case.objective, case.batch, strategy)
    assert_gradients_equal(grads, expected)
    # every meta-parameter is learned, the ones the inner loop leaves alone included
    assert all(expected[k].abs().sum() > 0 for k in expected)


@pytest.mark.parametrize("strategy", ["loop", "batched"])
@pytest.mark.parametrize("name", FAMILY)
def test_recomputed_inner_steps_give_the_plain_autograd_meta_gradient(
    case, gradient_of, name, strategy
):
    """`checkpoint_inner`: the parameters the inner loop does not adapt (ANIL's body, BOIL's
    head) and Meta-SGD's learned rates are differentiated through the recomputed steps too."""
    expected, _ = reference(case, name)
    grads, _ = gradient_of(
        algorithm(name, case),
        case.model,
        case.objective,
        case.batch,
        strategy,
        checkpoint_inner=True,
    )
    assert_gradients_equal(grads, expected)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", FAMILY)
def test_the_first_order_meta_gradient_equals_plain_autograd(
    tiny_mlp, sinusoid_batch, gradient_of, name, strategy
):
    case = mlp_case(tiny_mlp[0], sinusoid_batch)
    expected, _ = reference(case, name, first_order=True)
    first_order = algorithm(name, case, first_order=True)
    grads, _ = gradient_of(first_order, case.model, REGRESSION, sinusoid_batch, strategy)
    assert_gradients_equal(grads, expected)
    second_order, _ = reference(case, name)
    assert not torch.allclose(expected["0.weight"], second_order["0.weight"])


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_anil_without_inner_steps_is_plain_supervised_learning_of_the_query_loss(
    case, gradient_of, strategy
):
    """The body's meta-gradient comes through the query loss alone."""
    theta = {k: p.detach().clone().requires_grad_() for k, p in case.model.named_parameters()}
    losses = [case.loss(case.forward(theta, xq), yq) for _, _, xq, yq in zip(*case.batch.tensors())]
    expected = torch.autograd.grad(sum(losses) / case.batch.num_tasks, list(theta.values()))
    anil = ANIL(inner_steps=0, inner_lr=case.lr)
    grads, _ = gradient_of(anil, case.model, case.objective, case.batch, strategy)
    assert_gradients_equal(grads, dict(zip(theta, expected)))


@pytest.mark.parametrize("name", FAMILY)
def test_the_inner_loop_moves_only_what_the_algorithm_adapts(case, name):
    """ANIL: the adapted body is θ's body; BOIL: the head does not move; Meta-SGD: all move."""
    meta = algorithm(name, case)
    learner = Network(case.model, case.objective).task_learner()
    params = dict(case.model.named_parameters())
    xs, ys, _, _ = (t[0] for t in case.batch.tensors())
    fast, _ = meta.inner(learner, MetaParameters(params, meta.extra_parameters(params)), xs, ys)
    assert list(fast) == list(params)
    assert [k for k in params if not torch.equal(fast[k], params[k])] == case.adapted_names(name)


def adapt_by_hand(case, names, rates, xs, ys, steps):
    """The parameters after 0..`steps` SGD steps of `names` on `(xs, ys)`, step size `rates[k]`."""
    fast = {k: p.detach() for k, p in case.model.named_parameters()}
    path = [fast]
    for _ in range(steps):

        def support_loss(part, fast=fast):
            return case.loss(case.forward({**fast, **part}, xs), ys)

        grads = torch.func.grad(support_loss)({k: fast[k] for k in names})
        fast = {**fast, **{k: fast[k] - rates[k] * g for k, g in grads.items()}}
        path.append(fast)
    return path


@pytest.mark.parametrize("name", FAMILY)
def test_test_time_adaptation_moves_only_what_the_algorithm_adapts(case, name):
    learner = MetaLearner(algorithm(name, case), case.model, case.objective, "loop")
    metric = "mse" if case.objective is REGRESSION else "loss"
    metrics = adapted_metrics(learner, [case.batch], steps=2)
    names = case.adapted_names(name)
    rates = dict.fromkeys(names, case.lr)
    for task, (xs, ys, xq, yq) in enumerate(zip(*case.batch.tensors())):
        for step, fast in enumerate(adapt_by_hand(case, names, rates, xs, ys, steps=2)):
            expected = case.loss(case.forward(fast, xq), yq)
            torch.testing.assert_close(metrics[metric][task, step], expected)
    adaptation = learner.algorithm.adapt_for_test(
        learner.network.task_learner(),
        learner.meta.detached(),
        case.batch.x_support[0],
        case.batch.y_support[0],
        steps=1,
        observe=dict,
    )
    path = adaptation.observations
    assert {k for k in path if not torch.equal(path[k][0], path[k][1])} == set(names)


def test_metasgd_adapts_at_test_time_at_its_learned_rates_scaled_by_an_explicit_lr(
    tiny_mlp, sinusoid_batch
):
    case = mlp_case(tiny_mlp[0], sinusoid_batch)
    learner = MetaLearner(MetaSGD(inner_lr=0.1), case.model, REGRESSION, "loop")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for rate in learner.meta.extra.values():
            rate.copy_(torch.rand(rate.shape, generator=generator, dtype=rate.dtype) * 0.2)
    names = [k for k, _ in case.model.named_parameters()]
    xs, ys, xq, yq = (t[0] for t in sinusoid_batch.tensors())
    for lr, scale in [(None, 1.0), (0.1, 1.0), (0.05, 0.5)]:
        rates = {k: scale * learner.meta.extra[f"lr.{k}"].detach() for k in names}
        fast = adapt_by_hand(case, names, rates, xs, ys, steps=1)[1]
        metrics = adapted_metrics(learner, [sinusoid_batch], steps=1, lr=lr)
        torch.testing.assert_close(metrics["mse"][0, 1], F.mse_loss(mlp_forward(fast, xq), yq))


def test_the_metasgd_rate_gradient_equals_central_finite_differences(
    tiny_mlp, sinusoid_batch, gradient_of
):
    case, eps = mlp_case(tiny_mlp[0], sinusoid_batch), 1e-5
    grads, _ = gradient_of(
        algorithm("metasgd", case), case.model, REGRESSION, sinusoid_batch, "loop"
    )

    def meta_loss(name, index, shift):
        rates = {k: torch.full_like(p, case.lr) for k, p in case.model.named_parameters()}
        rates[name][index] += shift
        return reference(case, "metasgd", rates=rates)[1]

    for name, index in [("2.weight", (3, 5)), ("0.bias", (2,)), ("4.bias", (0,))]:
        difference = (meta_loss(name, index, eps) - meta_loss(name, index, -eps)) / (2 * eps)
        # float64 central differences: O(eps²) truncation, ~1e-11 absolute rounding
        assert grads[f"extra.lr.{name}"][index].item() == pytest.approx(
            difference, rel=1e-5, abs=1e-9
        )


def test_metasgd_sinusoid_checkpoints_its_learned_rates_and_resumes_bit_exactly(tmp_path):
    overrides = [
        "model.hidden=[8, 8]",
        "train.meta_batch_size=4",
        "train.strategy=vmap",
        "train.val_every=5",
        "train.val_tasks=4",
        "train.log_every=5",
        "train.ckpt_every=5",
        "eval.num_tasks=4",
    ]

    def run(folder, iterations, resume=False):
        config = load_config(
            "metasgd-sinusoid-5shot", [*overrides, f"train.iterations={iterations}"]
        )
        return fit(config, tmp_path / folder, resume=resume, progress=False)

    whole = run("whole", 10)
    run("part", 5)
    part = run("part", 10, resume=True)
    a, b = (CheckpointStore(folder / CHECKPOINT_DIR).load("last") for folder in (whole, part))
    assert set(a["extra"]) == {f"lr.{k}" for k in a["model"]}
    assert any(not torch.all(rate == 0.01) for rate in a["extra"].values())  # they were learned
    assert len(a["optimizer"]["state"]) == 2 * len(a["model"])  # Adam state of α too
    for k in a["extra"]:
        assert torch.equal(a["extra"][k], b["extra"][k]), k
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


PRESETS = {
    "anil-omniglot-5w1s": ANIL,
    "anil-miniimagenet-5w1s": ANIL,
    "boil-omniglot-5w1s": BOIL,
    "boil-miniimagenet-5w1s": BOIL,
    "metasgd-omniglot-5w1s": MetaSGD,
    "metasgd-sinusoid-5shot": MetaSGD,
}


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_loads_and_builds_its_algorithm(preset):
    config = load_config(preset)
    built = build_algorithm(config)
    assert type(built) is PRESETS[preset]
    assert (built.inner_steps, built.inner_lr) == (
        config.algorithm.inner_steps,
        config.algorithm.inner_lr,
    )


def test_the_head_prefix_and_first_order_come_from_the_config():
    config = load_config(
        "boil-omniglot-5w1s",
        ["algorithm.kwargs={head: 'classifier.'}", "algorithm.first_order=true"],
    )
    assert build_algorithm(config) == BOIL(1, 0.4, first_order=True, head="classifier.")
    assert set(BUILT_IN) == set(BUILT_IN_ALGORITHMS)
    with pytest.raises(ConfigError, match="could not be called"):
        build_algorithm(load_config("anil-omniglot-5w1s", ["algorithm.kwargs={heads: x}"]))
    with pytest.raises(ConfigError, match="set inner_optimizer = sgd"):
        build_algorithm(load_config("metasgd-sinusoid-5shot", ["algorithm.inner_optimizer=adam"]))
    with pytest.raises(ConfigError, match="only applies to maml, anil, boil, metasgd"):
        load_config("reptile-sinusoid-5shot", ["algorithm.first_order=true"])
