"""An algorithm of one's own is one class: here an inner loop that adapts only the last layer,
at a learned inner learning rate (an extra meta-parameter), checked against plain autograd."""

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from metagrad.algorithms import Algorithm, InnerOptimizer
from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore
from metagrad.config import load_config
from metagrad.evaluate import adapted_metrics, evaluate_run
from metagrad.execution import MetaLearner
from metagrad.objectives import REGRESSION
from metagrad.train import fit


@dataclass(frozen=True)
class HeadOnly(Algorithm):
    """Adapts only the parameters named `head*` in the inner loop, at a learned rate e^ρ."""

    head: str = "4."

    def extra_parameters(self, network):
        return {"log_lr": next(iter(network.values())).new_tensor(math.log(self.inner_lr))}

    def split(self, params):
        head = {k: v for k, v in params.items() if k.startswith(self.head)}
        return {k: v for k, v in params.items() if k not in head}, head

    def learned_sgd(self, meta, lr=None):
        """SGD at e^ρ (or `lr`): the learned rate travels in the optimizer's state, not in a
        closure, so that recomputed inner steps (`checkpoint_inner`) differentiate it."""
        log_lr = meta.extra["log_lr"]
        return InnerOptimizer(
            init=lambda params: (log_lr.exp() if lr is None else log_lr.new_tensor(lr),),
            step=lambda params, grads, state: (
                {k: p - state[0] * grads[k] for k, p in params.items()},
                state,
            ),
        )

    def inner(self, learner, meta, x_support, y_support):
        body, head = self.split(meta.network)
        adaptation = learner.adapt(
            head,
            x_support,
            y_support,
            steps=self.inner_steps,
            optimizer=self.learned_sgd(meta),
            first_order=False,
            fixed=body,
        )
        return {**body, **adaptation.params}, {}

    def outer(self, learner, meta, fast, task):
        outputs = learner(fast, task.x_query)
        loss = learner.loss(outputs, task.y_query)
        return {"loss": loss, **learner.metrics("query", outputs, task.y_query)}

    def adapt_for_test(self, learner, meta, x_support, y_support, *, steps, lr=None, observe=None):
        body, head = self.split(meta.network)
        return learner.adapt(
            head,
            x_support,
            y_support,
            steps=steps,
            optimizer=self.learned_sgd(meta, lr),
            first_order=True,
            observe=observe,
            fixed=body,
        )


def reference(model, batch, log_lr, steps=2):
    """Plain autograd: the head takes `steps` steps at rate e^ρ; the meta-loss is the mean
    query loss; gradients w.r.t. every parameter and ρ."""
    theta = {k: p.detach().clone().requires_grad_() for k, p in model.named_parameters()}
    rho = torch.tensor(log_lr, dtype=torch.float64, requires_grad=True)
    meta_loss = 0
    for xs, ys, xq, yq in zip(*batch.tensors()):
        fast = dict(theta)
        for _ in range(steps):
            loss = F.mse_loss(torch.func.functional_call(model, fast, (xs,)), ys)
            grads = torch.autograd.grad(loss, [fast["4.weight"], fast["4.bias"]], create_graph=True)
            fast = {**fast, "4.weight": fast["4.weight"] - rho.exp() * grads[0]}
            fast["4.bias"] = fast["4.bias"] - rho.exp() * grads[1]
        meta_loss = meta_loss + F.mse_loss(torch.func.functional_call(model, fast, (xq,)), yq)
    meta_loss = meta_loss / batch.num_tasks
    grads = torch.autograd.grad(meta_loss, [*theta.values(), rho])
    return dict(zip([*theta, "extra.log_lr"], grads)), meta_loss.item()


@pytest.mark.parametrize("strategy", ["loop", "vmap", "hybrid", "batched"])
def test_every_strategy_equals_plain_autograd(tiny_mlp, sinusoid_batch, gradient_of, strategy):
    model = tiny_mlp[0]
    algorithm = HeadOnly(inner_steps=2, inner_lr=0.1)
    expected, _ = reference(model, sinusoid_batch, math.log(0.1))
    grads, _ = gradient_of(algorithm, model, REGRESSION, sinusoid_batch, strategy)
    assert grads.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(grads[k], expected[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_recomputed_inner_steps_give_the_plain_autograd_meta_gradient(
    tiny_mlp, sinusoid_batch, gradient_of, strategy
):
    """`checkpoint_inner`: the body, passed as `fixed`, and the learned rate, in the optimizer's
    state, are differentiated through the recomputed steps."""
    model = tiny_mlp[0]
    algorithm = HeadOnly(inner_steps=2, inner_lr=0.1)
    expected, _ = reference(model, sinusoid_batch, math.log(0.1))
    grads, _ = gradient_of(
        algorithm, model, REGRESSION, sinusoid_batch, strategy, checkpoint_inner=True
    )
    assert grads.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(grads[k], expected[k], rtol=1e-10, atol=1e-12, msg=k)


def test_the_learned_rate_gradient_equals_finite_differences(tiny_mlp, sinusoid_batch):
    model, eps = tiny_mlp[0], 1e-6
    expected, _ = reference(model, sinusoid_batch, math.log(0.1))
    shifted = [reference(model, sinusoid_batch, math.log(0.1) + s)[1] for s in (eps, -eps)]
    difference = (shifted[0] - shifted[1]) / (2 * eps)
    assert expected["extra.log_lr"].item() == pytest.approx(difference, rel=1e-5)


def test_test_time_adaptation_is_the_algorithms_own(tiny_mlp, sinusoid_batch):
    """Evaluation asks the algorithm: only the head moves, at the learned rate."""
    model = tiny_mlp[0]
    learner = MetaLearner(HeadOnly(inner_lr=0.1), model, REGRESSION, "loop")
    with torch.no_grad():
        learner.meta.extra["log_lr"].fill_(math.log(0.05))
    metrics = adapted_metrics(learner, [sinusoid_batch], steps=1)
    xs, ys, xq, yq = (t[0] for t in sinusoid_batch.tensors())
    head = ["4.weight", "4.bias"]
    params = {k: p.detach().requires_grad_(k in head) for k, p in model.named_parameters()}
    grads = torch.autograd.grad(
        F.mse_loss(torch.func.functional_call(model, params, (xs,)), ys), [params[k] for k in head]
    )
    adapted = {**params, **{k: params[k] - 0.05 * g for k, g in zip(head, grads)}}
    expected = F.mse_loss(torch.func.functional_call(model, adapted, (xq,)), yq)
    torch.testing.assert_close(metrics["mse"][0, 1], expected.detach())
    assert not torch.isclose(metrics["mse"][0, 1], metrics["mse"][0, 0])


def test_named_in_a_config_it_trains_checkpoints_and_resumes_its_own_parameters(tmp_path):
    """`algorithm.name: module:Class`: the learned rate is meta-learned, saved with its optimizer
    state, and a resumed run ends where the uninterrupted one does."""
    overrides = [
        f"algorithm.name={__name__}:HeadOnly",
        "algorithm.kwargs={head: '4.'}",
        "train.strategy=vmap",
        "train.val_every=5",
        "train.val_tasks=4",
        "train.log_every=5",
        "train.ckpt_every=5",
        "eval.num_tasks=4",
    ]
    whole = fit(
        load_config("maml-sinusoid-5shot", [*overrides, "train.iterations=10"]),
        tmp_path / "whole",
        progress=False,
    )
    part = tmp_path / "part"
    fit(
        load_config("maml-sinusoid-5shot", [*overrides, "train.iterations=5"]), part, progress=False
    )
    fit(
        load_config("maml-sinusoid-5shot", [*overrides, "train.iterations=10"]),
        part,
        resume=True,
        progress=False,
    )
    a, b = (CheckpointStore(run / CHECKPOINT_DIR).load("last") for run in (whole, part))
    assert a["extra"]["log_lr"] != math.log(0.01)  # it was learned
    assert torch.equal(a["extra"]["log_lr"], b["extra"]["log_lr"])
    assert len(a["optimizer"]["state"]) == len(a["model"]) + 1  # Adam state of ρ too
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert evaluate_run(whole)["mean"]["mse"]
