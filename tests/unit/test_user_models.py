"""A user's own network, batch norm included, against MAML, first-order MAML and Reptile written
by hand in this file: plain `torch.autograd.grad(create_graph=True)` over plain PyTorch ops."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metagrad.algorithms import BUILT_IN, MAML, Reptile
from metagrad.errors import ConfigError
from metagrad.evaluate import adapted_metrics
from metagrad.execution import ExecutionPlan, MetaLearner
from metagrad.models import TaskBatchNorm, exact_modules
from metagrad.models.resnet12 import ResNet12
from metagrad.objectives import CLASSIFICATION
from metagrad.tasks import TaskBatch

STEPS, LR = 3, 0.3
VECTORISED_AND_LOOP = ("loop", "vmap", "hybrid")


class UserCNN(nn.Module):
    """What a learn2learn user brings: PyTorch's own layers, `nn.BatchNorm2d` included."""

    def __init__(self, norm: str = "batch", track_running_stats: bool = True):
        super().__init__()

        def norm_layer(channels: int) -> nn.Module:
            if norm == "group":
                return nn.GroupNorm(2, channels)
            if norm == "layer":
                return nn.LayerNorm([channels, 6, 6])
            return nn.BatchNorm2d(channels, track_running_stats=track_running_stats)

        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.norm1 = norm_layer(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.norm2 = norm_layer(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        h = F.relu(self.norm2(self.conv2(h)))
        return self.head(h.mean(dim=(2, 3)))


def reference_forward(model: UserCNN, params: dict, x: torch.Tensor) -> torch.Tensor:
    """The same network in plain functional ops, normalising with the batch in hand."""

    def norm(name: str, h: torch.Tensor) -> torch.Tensor:
        layer = getattr(model, name)
        weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]
        if isinstance(layer, nn.GroupNorm):
            return F.group_norm(h, layer.num_groups, weight, bias, layer.eps)
        if isinstance(layer, nn.LayerNorm):
            return F.layer_norm(h, layer.normalized_shape, weight, bias, layer.eps)
        return F.batch_norm(h, None, None, weight, bias, training=True, eps=layer.eps)

    h = F.relu(norm("norm1", F.conv2d(x, params["conv1.weight"], params["conv1.bias"], padding=1)))
    h = F.relu(norm("norm2", F.conv2d(h, params["conv2.weight"], params["conv2.bias"], padding=1)))
    return F.linear(h.mean(dim=(2, 3)), params["head.weight"], params["head.bias"])


def reference_adapt(forward, theta, xs, ys, create_graph):
    fast = dict(theta)
    for _ in range(STEPS):
        loss = F.cross_entropy(forward(fast, xs), ys)
        grads = torch.autograd.grad(loss, list(fast.values()), create_graph=create_graph)
        fast = {k: v - LR * g for (k, v), g in zip(fast.items(), grads)}
    return fast


def reference_gradient(forward, named_parameters, batch, algorithm):
    """The meta-gradient of `algorithm` for `forward(params, x)`, by plain autograd."""
    theta = {k: p.detach().clone().requires_grad_() for k, p in named_parameters}
    if algorithm == "reptile":
        phis = [
            reference_adapt(forward, theta, xs, ys, create_graph=False)
            for xs, ys, _, _ in zip(*batch.tensors())
        ]
        mean_phi = {k: torch.stack([phi[k].detach() for phi in phis]).mean(0) for k in theta}
        return {k: theta[k].detach() - mean_phi[k] for k in theta}
    meta_loss = 0
    for xs, ys, xq, yq in zip(*batch.tensors()):
        fast = reference_adapt(forward, theta, xs, ys, create_graph=algorithm == "maml")
        meta_loss = meta_loss + F.cross_entropy(forward(fast, xq), yq)
    grads = torch.autograd.grad(meta_loss / batch.num_tasks, list(theta.values()))
    return dict(zip(theta, grads))


def user_reference(model, batch, algorithm):
    plain = copy.deepcopy(model)
    return reference_gradient(
        lambda params, x: reference_forward(plain, params, x),
        model.named_parameters(),
        batch,
        algorithm,
    )


ALGORITHMS = {
    "maml": MAML(STEPS, LR),
    "fomaml": MAML(STEPS, LR, first_order=True),
    "reptile": Reptile(STEPS, LR),
}


def task_batch(tasks: int = 3, channels: int = 1, size: int = 6, seed: int = 1) -> TaskBatch:
    generator = torch.Generator().manual_seed(seed)
    image = (channels, size, size)
    return TaskBatch(
        torch.rand(tasks, 6, *image, generator=generator, dtype=torch.float64),
        torch.arange(3).repeat(2).expand(tasks, 6),
        torch.rand(tasks, 9, *image, generator=generator, dtype=torch.float64),
        torch.arange(3).repeat(3).expand(tasks, 9),
    )


def user_model(norm: str, track_running_stats: bool = True) -> UserCNN:
    torch.manual_seed(0)
    model = UserCNN(norm, track_running_stats).double()
    with torch.no_grad():  # non-trivial affine parameters, so a wrong gradient shows
        for name, p in model.named_parameters():
            if name.startswith("norm"):
                p.add_(torch.rand_like(p) * 0.5)
    return model


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(
    ("norm", "track"), [("batch", True), ("batch", False), ("group", False), ("layer", False)]
)
def test_every_strategy_equals_the_hand_written_reference(gradient_of, algorithm, norm, track):
    model = user_model(norm, track)
    batch = task_batch()
    expected = user_reference(model, batch, algorithm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exact_modules(model)
    running = {k: v.clone() for k, v in model.named_buffers()}
    for strategy in VECTORISED_AND_LOOP:
        grads, _ = gradient_of(ALGORITHMS[algorithm], model, CLASSIFICATION, batch, strategy)
        for k in expected:
            torch.testing.assert_close(grads[k], expected[k], rtol=1e-10, atol=1e-10)
    with pytest.raises(ConfigError, match="batched needs a network with forward_tasks"):
        gradient_of(ALGORITHMS[algorithm], model, CLASSIFICATION, batch, "batched")
    for k, v in model.named_buffers():  # running statistics: kept, never touched
        assert torch.equal(v, running[k]), k


class Volume(nn.Module):
    """Each image as a one-slice volume, for 3-d layers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(2)


OTHER_NORMS = {
    "BatchNorm1d": lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(36, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)
    ),
    "BatchNorm3d": lambda: nn.Sequential(
        Volume(),
        nn.Conv3d(1, 4, (1, 3, 3), padding=(0, 1, 1)),
        nn.BatchNorm3d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ),
    "InstanceNorm2d": lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.InstanceNorm2d(4, affine=True),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ),
}


@pytest.mark.parametrize("norm", OTHER_NORMS)
def test_other_normalisation_layers_are_exact_in_every_strategy(gradient_of, norm):
    """The reference runs PyTorch's own layers per task in a loop, where their second-order
    gradient is right."""
    torch.manual_seed(0)
    model = OTHER_NORMS[norm]().double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.rand_like(p) * 0.5)
    batch = task_batch()
    plain = copy.deepcopy(model)
    expected = reference_gradient(
        lambda params, x: torch.func.functional_call(plain, params, (x,)),
        model.named_parameters(),
        batch,
        "maml",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exact_modules(model)
    for strategy in VECTORISED_AND_LOOP:
        grads, _ = gradient_of(ALGORITHMS["maml"], model, CLASSIFICATION, batch, strategy)
        for k in expected:
            torch.testing.assert_close(grads[k], expected[k], rtol=1e-10, atol=1e-10)


def vmapped_maml_gradient(model, batch):
    """Second-order MAML in torch.func alone: nested `grad` under `vmap` over the tasks."""
    theta = {k: p.detach() for k, p in model.named_parameters()}

    def loss(params, x, y):
        return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    def task_loss(params, xs, ys, xq, yq):
        for _ in range(STEPS):
            grads = torch.func.grad(loss)(params, xs, ys)
            params = {k: params[k] - LR * grads[k] for k in params}
        return loss(params, xq, yq)

    def meta_loss(params):
        return torch.vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(params, *batch.tensors()).mean()

    return torch.func.grad(meta_loss)(theta)


def test_pytorch_batch_norm_under_vmap_is_the_trap_the_rewrite_avoids(gradient_of):
    """PyTorch's fused batch norm gives a wrong second-order gradient under vmap; metagrad
    refuses such a network unless its layers are rewritten, and then is exact."""
    model = user_model("batch", track_running_stats=False)
    batch = task_batch()
    expected = user_reference(model, batch, "maml")
    grads = vmapped_maml_gradient(model, batch)
    assert max((grads[k] - expected[k]).abs().max().item() for k in expected) > 1e-4
    with pytest.raises(ConfigError, match=r"'norm1' is PyTorch's own BatchNorm2d.*exact_modules"):
        gradient_of(ALGORITHMS["maml"], model, CLASSIFICATION, batch, "vmap")
    exact_modules(model)
    grads = vmapped_maml_gradient(model, batch)
    for k in expected:
        torch.testing.assert_close(grads[k], expected[k], rtol=1e-10, atol=1e-10)


def test_running_statistics_are_kept_in_the_state_dict_and_announced():
    model = user_model("batch", track_running_stats=True)
    keys = set(model.state_dict())
    with pytest.warns(UserWarning, match="'norm1' .* running statistics are updated by meta-train"):
        exact_modules(model)
    assert set(model.state_dict()) == keys
    model.load_state_dict(user_model("batch").state_dict())


def reference_running_statistics(model, batches):
    """The buffers of `model` (PyTorch's own batch norm, training mode) after a plain loop over
    the tasks of `batches`: every inner step's support forward pass, then the query forward pass
    (MAML's loss; Reptile's metrics), each moving the running statistics in place."""
    plain = copy.deepcopy(model)
    for batch in batches:
        for xs, ys, xq, _ in zip(*batch.tensors()):
            fast = {k: p.detach().requires_grad_() for k, p in plain.named_parameters()}
            for _ in range(STEPS):
                loss = F.cross_entropy(torch.func.functional_call(plain, fast, (xs,)), ys)
                grads = torch.autograd.grad(loss, list(fast.values()))
                fast = {k: v - LR * g for (k, v), g in zip(fast.items(), grads)}
            torch.func.functional_call(plain, fast, (xq,))
    return dict(plain.named_buffers())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_statistics_are_updated_as_pytorch_updates_them(algorithm, momentum):
    """A meta-gradient moves the running statistics exactly as a training-mode loop over the
    tasks would, in every strategy and chunking, and evaluation leaves them alone."""
    model = user_model("batch", track_running_stats=True)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = momentum
    batches = [task_batch(tasks=3), task_batch(tasks=3, seed=2)]
    expected = reference_running_statistics(model, batches)
    plans = [
        ExecutionPlan("loop"),
        ExecutionPlan("loop", checkpoint_inner=True),
        ExecutionPlan("vmap"),
        ExecutionPlan("vmap", 2),
        ExecutionPlan("hybrid", 2),
    ]
    for plan in plans:
        mine = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            learner = MetaLearner(ALGORITHMS[algorithm], mine, CLASSIFICATION, plan)
        for batch in batches:
            _, metrics = learner.meta_gradient(batch)
            assert not any(k.startswith("running") for k in metrics)
        for k, v in mine.named_buffers():
            torch.testing.assert_close(v, expected[k], rtol=1e-12, atol=1e-14, msg=k)
        before = {k: v.clone() for k, v in mine.named_buffers()}
        adapted_metrics(learner, batches, steps=2)
        for k, v in mine.named_buffers():
            assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("name", ["anil", "boil", "metasgd", "mamlpp", "protonets", "pretrain"])
def test_every_algorithm_updates_running_statistics_alike_in_every_strategy(name):
    """The forward passes of any algorithm (MAML++'s query loss after every step included) move
    the running statistics the same way whichever strategy runs them."""
    model = user_model("batch", track_running_stats=True)
    algorithm = BUILT_IN[name](inner_steps=2, inner_lr=0.1)
    buffers = {}
    for strategy in ("loop", "vmap", "hybrid"):
        mine = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            learner = MetaLearner(algorithm, mine, CLASSIFICATION, strategy)
        learner.meta_gradient(task_batch())
        buffers[strategy] = dict(mine.named_buffers())
    for k, v in model.named_buffers():
        if k.endswith("num_batches_tracked"):
            assert buffers["loop"][k] > v, k
        else:
            assert not torch.equal(buffers["loop"][k], v), k
        for strategy in ("vmap", "hybrid"):
            torch.testing.assert_close(buffers[strategy][k], buffers["loop"][k], msg=k)


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_evaluation_with_running_statistics_is_pytorchs_evaluation_mode(strategy):
    """`batch_norm="running"`: test-time adaptation and query predictions normalise with the
    running statistics meta-training kept, as the user's own module does in `eval()` mode."""
    model = user_model("batch", track_running_stats=True)
    plain = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learner = MetaLearner(MAML(STEPS, LR), model, CLASSIFICATION, strategy)
    learner.meta_gradient(task_batch())  # moves the running statistics away from 0 and 1
    plain.load_state_dict(model.state_dict())
    plain.eval()
    batch = task_batch(seed=3)
    metrics = adapted_metrics(learner, [batch], steps=2, batch_norm="running")
    for task, (xs, ys, xq, yq) in enumerate(zip(*batch.tensors())):
        fast = {k: p.detach().requires_grad_() for k, p in plain.named_parameters()}
        for step in range(3):
            with torch.no_grad():
                query = F.cross_entropy(torch.func.functional_call(plain, fast, (xq,)), yq)
            torch.testing.assert_close(metrics["loss"][task, step], query, rtol=1e-10, atol=0)
            loss = F.cross_entropy(torch.func.functional_call(plain, fast, (xs,)), ys)
            grads = torch.autograd.grad(loss, list(fast.values()))
            fast = {k: v - LR * g for (k, v), g in zip(fast.items(), grads)}
    transductive = adapted_metrics(learner, [batch], steps=2)
    assert not torch.allclose(transductive["loss"], metrics["loss"])


def test_evaluation_with_running_statistics_needs_a_network_that_keeps_them():
    learner = MetaLearner(MAML(STEPS, LR), user_model("batch", False), CLASSIFICATION, "loop")
    with pytest.raises(ConfigError, match=r"eval.batch_norm = running.*transductive or inductive"):
        adapted_metrics(learner, [task_batch()], steps=1, batch_norm="running")


def test_instance_norm_with_running_statistics_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.InstanceNorm2d(2, track_running_stats=True))
    with pytest.raises(ConfigError, match=r"InstanceNorm2d.*track_running_stats=False"):
        exact_modules(model)


def test_dropout_is_refused_naming_the_layer_and_the_fix():
    model = nn.Sequential(nn.Linear(2, 4), nn.Dropout(0.3), nn.Linear(4, 1))
    with pytest.raises(ConfigError, match=r"model layer '1' \(Dropout.*Set its p to 0"):
        exact_modules(model)
    exact_modules(nn.Sequential(nn.Linear(2, 4), nn.Dropout(0.0)))  # p = 0 is the identity


def plain_resnet12(model: ResNet12) -> nn.Module:
    """A copy of `model` made of PyTorch's own layers only: `nn.BatchNorm2d` on batch
    statistics in place of metagrad's batch norm."""
    plain = copy.deepcopy(model)
    for name, module in list(plain.named_modules()):
        if isinstance(module, TaskBatchNorm):
            norm = nn.BatchNorm2d(module.num_features, eps=module.eps, track_running_stats=False)
            norm.weight, norm.bias = module.weight, module.bias
            parent, _, child = name.rpartition(".")
            setattr(plain.get_submodule(parent), child, norm)
    return plain


@pytest.mark.parametrize("algorithm", ["maml", "fomaml"])
def test_resnet12_loop_and_vmap_equal_the_hand_written_reference(gradient_of, algorithm):
    torch.manual_seed(0)
    model = ResNet12(3, 3, 16, channels=(3, 4, 4, 5)).double()
    batch = task_batch(tasks=2, channels=3, size=16)
    plain = plain_resnet12(model)
    expected = reference_gradient(
        lambda params, x: torch.func.functional_call(plain, params, (x,)),
        model.named_parameters(),
        batch,
        algorithm,
    )
    for strategy in ("loop", "vmap"):
        grads, _ = gradient_of(ALGORITHMS[algorithm], model, CLASSIFICATION, batch, strategy)
        for k in expected:
            torch.testing.assert_close(grads[k], expected[k], rtol=1e-10, atol=1e-10)
