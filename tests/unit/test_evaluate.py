import math

import torch
import torch.nn.functional as F

from metagrad.algorithms import MAML
from metagrad.evaluate import adapted_metrics, fixed_batches, summarize
from metagrad.execution import MetaLearner
from metagrad.models import Conv4, functional_forward, meta_parameters
from metagrad.objectives import CLASSIFICATION, REGRESSION
from metagrad.tasks import SinusoidTasks, TaskBatch


def test_fixed_tasks_do_not_depend_on_the_batch_size():
    tasks = SinusoidTasks(k_shot=5, n_query=10)
    a = fixed_batches(tasks, "test", 10, 3)
    b = fixed_batches(tasks, "test", 10, 10)
    assert [x.num_tasks for x in a] == [3, 3, 3, 1]
    torch.testing.assert_close(torch.cat([x.x_query for x in a]), b[0].x_query)


def test_summary_is_mean_and_normal_95_percent_interval():
    values = torch.tensor([[1.0, 0.0], [3.0, 1.0], [5.0, 2.0]])
    summary = summarize({"mse": values})
    assert summary.mean["mse"] == [3.0, 1.0]
    assert math.isclose(summary.ci95["mse"][0], 1.96 * 2.0 / math.sqrt(3))


def test_evaluation_matches_per_task_adaptation_and_leaves_theta_alone(tiny_mlp):
    model, forward, params, buffers = tiny_mlp
    before = {k: p.detach().clone() for k, p in params.items()}
    batches = [
        b.to("cpu", torch.float64) for b in fixed_batches(SinusoidTasks(5, 20), "test", 5, 2)
    ]
    learner = MetaLearner(MAML(inner_lr=0.5), model, REGRESSION, "vmap")
    metrics = adapted_metrics(learner, batches, steps=3, lr=0.1)
    assert metrics["mse"].shape == (5, 4)
    xs, ys, xq, yq = (t[0] for t in batches[0].tensors())
    fast = {k: p.detach() for k, p in params.items()}
    for step in range(4):
        torch.testing.assert_close(
            metrics["mse"][0, step], F.mse_loss(forward(fast, buffers, xq), yq)
        )
        grads = torch.func.grad(lambda p: F.mse_loss(forward(p, buffers, xs), ys))(fast)
        fast = {k: fast[k] - 0.1 * grads[k] for k in fast}
    for k in params:
        assert torch.equal(params[k], before[k])


def test_inductive_batch_norm_normalises_each_query_example_with_the_support_set_only():
    torch.manual_seed(0)
    model = Conv4(1, 3, 12, hidden=4).double()
    forward = functional_forward(model)
    params, buffers = meta_parameters(model)
    batch = TaskBatch(
        torch.rand(1, 3, 1, 12, 12, dtype=torch.float64),
        torch.arange(3)[None],
        torch.rand(1, 5, 1, 12, 12, dtype=torch.float64),
        torch.tensor([[0, 1, 2, 0, 1]]),
    )

    learner = MetaLearner(MAML(inner_lr=0.1), model, CLASSIFICATION, "loop")

    def loss(inductive):
        mode = "inductive" if inductive else "transductive"
        return adapted_metrics(learner, [batch], steps=0, batch_norm=mode)["loss"][0, 0]

    xs, _, xq, yq = (t[0] for t in batch.tensors())
    alone = [
        F.cross_entropy(forward(params, buffers, torch.cat([xs, x[None]]))[-1:], y[None])
        for x, y in zip(xq, yq)
    ]
    torch.testing.assert_close(loss(inductive=True), torch.stack(alone).mean())
    torch.testing.assert_close(
        loss(inductive=False), F.cross_entropy(forward(params, buffers, xq), yq)
    )
    assert not torch.isclose(loss(inductive=True), loss(inductive=False))
