"""Prototypical Networks, Baseline and Baseline++ against references written in this file:
plain PyTorch ops and `torch.autograd.grad`, in float64, on a Conv-4 embedding with batch norm."""

import pytest
import torch
import torch.nn.functional as F

from metagrad.algorithms import Baseline, BaselinePlusPlus, ProtoNets, build_algorithm
from metagrad.build import build_learner
from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore
from metagrad.config import load_config
from metagrad.data import ClassImages
from metagrad.data.folder import splits_from_tensors
from metagrad.errors import ConfigError
from metagrad.evaluate import adapted_metrics
from metagrad.execution import MetaLearner
from metagrad.models import Conv4, TaskBatchNorm
from metagrad.objectives import CLASSIFICATION
from metagrad.tasks import EpisodeSampler, TaskBatch
from metagrad.train import fit

STRATEGIES = ("loop", "vmap", "hybrid", "batched")
CLASSES, FEATURES = 7, 4


def embed(params, x):
    """Conv-4 without a head: stride-2 convolutions, batch norm on the batch in hand (eps
    1e-3), ReLU, spatial mean."""
    h = x
    for block in range(4):
        conv, norm = f"features.{3 * block}.", f"features.{3 * block + 1}."
        h = F.conv2d(h, params[conv + "weight"], params[conv + "bias"], stride=2, padding=1)
        weight, bias = params[norm + "weight"], params[norm + "bias"]
        h = F.relu(F.batch_norm(h, None, None, weight, bias, training=True, eps=1e-3))
    return h.mean(dim=(2, 3))


@pytest.fixture
def embedding():
    torch.manual_seed(0)
    model = Conv4(1, 0, 12, hidden=FEATURES).double()
    assert model.head is None
    with torch.no_grad():  # non-trivial batch-norm affine parameters
        for module in model.modules():
            if isinstance(module, TaskBatchNorm):
                module.weight.add_(torch.rand_like(module.weight) * 0.5)
                module.bias.add_(torch.rand_like(module.bias) * 0.5)
    return model


def episodes(ways=3, shots=2, queries=3, tasks=3, seed=0):
    """Tasks whose labels come in a shuffled order."""
    generator = torch.Generator().manual_seed(seed)

    def labels(per_class):
        y = torch.arange(ways).repeat(per_class)
        return torch.stack([y[torch.randperm(len(y), generator=generator)] for _ in range(tasks)])

    def images(n):
        return torch.rand(tasks, n, 1, 12, 12, dtype=torch.float64, generator=generator)

    return TaskBatch(images(ways * shots), labels(shots), images(ways * queries), labels(queries))


def prototype_loss(params, xs, ys, xq, yq):
    """The Prototypical Networks loss as its paper's code computes it: support and query
    embedded in one batch, a prototype per class, minus squared distances as logits."""
    z = embed(params, torch.cat([xs, xq]))
    support, query = z[: len(xs)], z[len(xs) :]
    prototypes = torch.stack([support[ys == c].mean(0) for c in range(int(ys.max()) + 1)])
    logits = -((query[:, None, :] - prototypes[None, :, :]) ** 2).sum(-1)
    return F.cross_entropy(logits, yq)


def classifier_loss(params, head, xs, ys, xq, yq, cosine):
    """Cross-entropy of a linear (or cosine, scale 2) classifier over every training class on
    the embedding of the task's examples (one batch)."""
    z = embed(params, torch.cat([xs, xq]))
    if cosine:
        logits = 2 * F.normalize(z, dim=-1) @ F.normalize(head["weight"], dim=-1).T
    else:
        logits = z @ head["weight"].T + head["bias"]
    return F.cross_entropy(logits, torch.cat([ys, yq]))


def reference_gradient(loss_of, model, batch, extra=()):
    theta = {k: p.detach().clone().requires_grad_() for k, p in model.named_parameters()}
    extra = {k: v.detach().clone().requires_grad_() for k, v in dict(extra).items()}
    loss = sum(loss_of(theta, extra, *task) for task in zip(*batch.tensors())) / batch.num_tasks
    names = [*theta, *(f"extra.{k}" for k in extra)]
    return dict(zip(names, torch.autograd.grad(loss, [*theta.values(), *extra.values()])))


def assert_gradients_equal(grads, expected):
    assert grads.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(grads[k], expected[k], rtol=1e-10, atol=1e-12, msg=k)
        assert expected[k].abs().sum() > 0, k


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_protonets_meta_gradient_equals_plain_autograd(embedding, gradient_of, strategy):
    batch = episodes()
    expected = reference_gradient(
        lambda theta, _, *task: prototype_loss(theta, *task), embedding, batch
    )
    grads, metrics = gradient_of(ProtoNets(), embedding, CLASSIFICATION, batch, strategy)
    assert_gradients_equal(grads, expected)
    losses = [prototype_loss(dict(embedding.named_parameters()), *t) for t in zip(*batch.tensors())]
    torch.testing.assert_close(metrics["loss"], torch.stack(losses).detach())


def global_labels(batch, seed=1):
    """The same tasks, each example labelled by one of CLASSES training classes."""
    generator = torch.Generator().manual_seed(seed)
    classes = torch.stack([torch.randperm(CLASSES, generator=generator) for _ in batch.y_support])
    relabel = [classes.gather(1, y) for y in (batch.y_support, batch.y_query)]
    return TaskBatch(batch.x_support, relabel[0], batch.x_query, relabel[1])


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("kind", [Baseline, BaselinePlusPlus])
def test_the_baseline_meta_gradient_equals_plain_autograd(embedding, gradient_of, kind, strategy):
    batch = global_labels(episodes())
    algorithm = kind(classes=CLASSES, features=FEATURES)
    params = dict(embedding.named_parameters())
    extra = algorithm.extra_parameters(params)
    assert extra["classifier.weight"].shape == (CLASSES, FEATURES)
    assert ("classifier.bias" in extra) is (kind is Baseline)
    cosine = kind is BaselinePlusPlus

    def loss(theta, head, *task):
        return classifier_loss(theta, {k.split(".")[-1]: v for k, v in head.items()}, *task, cosine)

    expected = reference_gradient(loss, embedding, batch, extra)
    grads, _ = gradient_of(algorithm, embedding, CLASSIFICATION, batch, strategy)
    assert_gradients_equal(grads, expected)


def test_protonets_classifies_tasks_of_other_ways_than_it_trained_on(embedding):
    """Scores exist only for the task's own classes, whatever the number of ways."""
    learner = MetaLearner(ProtoNets(), embedding, CLASSIFICATION, "loop")
    for ways in (2, 5):
        batch = episodes(ways=ways, shots=1, queries=2, tasks=2, seed=ways)
        metrics = adapted_metrics(learner, [batch], steps=2)
        params = {k: p.detach() for k, p in embedding.named_parameters()}
        for task, (xs, ys, xq, yq) in enumerate(zip(*batch.tensors())):
            expected = prototype_loss(params, xs, ys, xq, yq)
            losses = metrics["loss"][task]
            assert torch.equal(losses, losses[0].expand(3))  # no inner loop
            torch.testing.assert_close(losses[0], expected, rtol=1e-12, atol=0)


def fine_tuned(head, features_s, ys, features_q, yq, steps, lr, cosine):
    """Query losses of a new classifier after 0..steps full-batch SGD steps on the support."""
    losses = []
    for step in range(steps + 1):

        def loss(head, features, y):
            if cosine:
                logits = 2 * F.normalize(features, dim=-1) @ F.normalize(head["w"], dim=-1).T
            else:
                logits = features @ head["w"].T + head["b"]
            return F.cross_entropy(logits, y)

        losses.append(loss(head, features_q, yq))
        if step < steps:
            grads = torch.func.grad(loss)(head, features_s, ys)
            head = {k: v - lr * grads[k] for k, v in head.items()}
    return torch.stack(losses)


@pytest.mark.parametrize("kind", [Baseline, BaselinePlusPlus])
def test_baselines_fit_a_new_classifier_to_the_support_set_at_test_time(embedding, kind):
    """The embedding is frozen; Baseline's classifier starts at zero, Baseline++'s at the
    normalised mean support embedding of each class."""
    algorithm = kind(classes=CLASSES, features=FEATURES, inner_lr=0.5)
    learner = MetaLearner(algorithm, embedding, CLASSIFICATION, "loop")
    batch = episodes(ways=3, shots=2, queries=3, tasks=2)
    metrics = adapted_metrics(learner, [batch], steps=4)
    params = {k: p.detach() for k, p in embedding.named_parameters()}
    for task, (xs, ys, xq, yq) in enumerate(zip(*batch.tensors())):
        support, query = embed(params, xs), embed(params, xq)
        if kind is Baseline:
            head = {"w": torch.zeros(3, FEATURES).double(), "b": torch.zeros(3).double()}
        else:
            means = torch.stack([F.normalize(support, dim=-1)[ys == c].mean(0) for c in range(3)])
            head = {"w": means}
        expected = fine_tuned(head, support, ys, query, yq, 4, 0.5, kind is BaselinePlusPlus)
        torch.testing.assert_close(metrics["loss"][task], expected)
    before = {k: p.clone() for k, p in embedding.named_parameters()}
    xs, ys = batch.x_support[0], batch.y_support[0]
    network, meta = learner.network.task_learner(), learner.meta.detached()
    fitted = algorithm.adapt_for_test(network, meta, xs, ys, steps=30)
    assert fitted.losses[-1] < 0.8 * fitted.losses[0]  # the support set is being fitted
    assert all(torch.equal(p, before[k]) for k, p in embedding.named_parameters())


def test_class_labels_name_each_training_example_s_class_and_only_in_training():
    """Class c's images all hold the value c: the label must be that value."""
    pixels = torch.arange(6, dtype=torch.uint8)[:, None, None, None, None].expand(6, 4, 1, 2, 2)
    images = ClassImages(pixels.contiguous(), tuple(f"c{i}" for i in range(6)))
    tasks = EpisodeSampler(
        {"train": images, "val": images}, 3, 1, 2, seed=0, train_labels="class"
    ).sample("train", 0, 5)
    for x, y in [(tasks.x_support, tasks.y_support), (tasks.x_query, tasks.y_query)]:
        assert torch.equal((x[:, :, 0, 0, 0] * 255).round().long(), y)
    assert len(set(tasks.y_support.flatten().tolist())) > 3  # classes beyond 0..N-1
    val = EpisodeSampler({"val": images}, 3, 1, 2, train_labels="class").sample("val", 0, 5)
    assert set(val.y_support.flatten().tolist()) == {0, 1, 2}


def tensor_images(classes=12, per_class=6, size=12):
    generator = torch.Generator().manual_seed(0)

    def split(names):
        return {n: torch.rand(per_class, 1, size, size, generator=generator) for n in names}

    names = [f"class{i}" for i in range(classes)]
    return splits_from_tensors(train=split(names[:6]), val=split(names[6:9]), test=split(names[9:]))


def small_config(algorithm, *overrides):
    return load_config(
        "protonets-omniglot-5w1s",
        [
            "task.dataset=folder",
            "task.n_way=3",
            "task.k_shot=1",
            "task.n_query=2",
            "task.image_size=12",
            "task.rotations=[]",
            "model.hidden=[4]",
            "model.pool=stride",
            f"algorithm.name={algorithm}",
            "train.meta_batch_size=2",
            "train.strategy=loop",
            "train.val_every=5",
            "train.val_tasks=4",
            "train.log_every=5",
            "train.ckpt_every=5",
            "eval.num_tasks=4",
            "eval.n_query=2",
            "eval.n_way=2",
            "eval.inner_steps=2",
            *overrides,
        ],
    )


def test_the_cli_path_fills_classes_and_features_and_builds_a_headless_network():
    images = tensor_images()
    learner = build_learner(small_config("baselinepp"), images=images)
    assert (learner.algorithm.classes, learner.algorithm.features) == (6, 4)
    assert learner.model.head is None
    assert learner.meta.extra["classifier.weight"].shape == (6, 4)
    assert isinstance(build_learner(small_config("protonets"), images=images).algorithm, ProtoNets)


@pytest.mark.parametrize("name", ["protonets", "baseline", "baselinepp"])
def test_checkpoints_resume_bit_exactly(tmp_path, name):
    images = tensor_images()

    def run(folder, iterations, resume=False):
        config = small_config(name, f"train.iterations={iterations}")
        return fit(config, tmp_path / folder, resume=resume, progress=False, images=images)

    whole = run("whole", 10)
    run("part", 5)
    part = run("part", 10, resume=True)
    a, b = (CheckpointStore(folder / CHECKPOINT_DIR).load("last") for folder in (whole, part))
    assert a["extra"].keys() == b["extra"].keys()
    assert ("classifier.weight" in a["extra"]) is (name != "protonets")
    for part_name in ("model", "extra"):
        for k in a[part_name]:
            assert torch.equal(a[part_name][k], b[part_name][k]), k
    assert (whole / "metrics.jsonl").read_text() == (part / "metrics.jsonl").read_text()


def test_bad_settings_are_refused_with_what_to_do():
    with pytest.raises(ConfigError, match=r"needs classes >= 1 .* Baseline\(classes=64"):
        Baseline()
    with pytest.raises(ConfigError, match="sinusoid is regression"):
        load_config("maml-sinusoid-5shot", ["algorithm.name=protonets"])
    with pytest.raises(ConfigError, match=r"eval.n_way = 2 .* without a head"):
        build_learner(small_config("maml"), images=tensor_images())
    assert build_algorithm(load_config("protonets-omniglot-20w1s")) == ProtoNets()
