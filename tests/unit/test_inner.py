"""`adapt()` and the meta-gradient rules against independent references."""

import pytest
import torch
import torch.nn.functional as F

from metagrad.algorithms import MAML, Pretrain, Reptile, adam, adapt, sgd
from metagrad.objectives import REGRESSION


def maml_gradient(gradient_of, model, batch, steps=2, lr=0.05, strategy="loop", **kwargs):
    algorithm = MAML(inner_steps=steps, inner_lr=lr, **kwargs)
    return gradient_of(algorithm, model, REGRESSION, batch, strategy)


def test_adapt_never_mutates_meta_parameters(tiny_mlp, sinusoid_batch):
    model, forward, params, buffers = tiny_mlp
    before = {k: p.detach().clone() for k, p in model.state_dict().items()}
    fast = adapt(
        forward,
        params,
        buffers,
        sinusoid_batch.x_support[0],
        sinusoid_batch.y_support[0],
        loss_fn=F.mse_loss,
        steps=3,
        optimizer=sgd(0.1),
    ).params
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
        assert params[name] is dict(model.named_parameters())[name]
    assert any(not torch.equal(fast[k], params[k]) for k in params)


def test_adapt_sgd_matches_manual_gradient_descent(tiny_mlp, sinusoid_batch):
    _, forward, params, buffers = tiny_mlp
    x, y = sinusoid_batch.x_support[0], sinusoid_batch.y_support[0]
    result = adapt(forward, params, buffers, x, y, loss_fn=F.mse_loss, steps=3, optimizer=sgd(0.1))
    manual = {k: p.detach().clone().requires_grad_() for k, p in params.items()}
    losses = []
    for _ in range(3):
        loss = F.mse_loss(forward(manual, buffers, x), y)
        grads = torch.autograd.grad(loss, list(manual.values()))
        manual = {
            k: (p - 0.1 * g).detach().requires_grad_() for (k, p), g in zip(manual.items(), grads)
        }
        losses.append(loss.item())
    for k in params:
        torch.testing.assert_close(result.params[k], manual[k])
    torch.testing.assert_close(result.losses, torch.tensor(losses, dtype=torch.float64))


def test_inner_adam_matches_torch_optim_adam_with_beta1_zero(tiny_mlp, sinusoid_batch):
    _, forward, params, buffers = tiny_mlp
    x, y = sinusoid_batch.x_support[0], sinusoid_batch.y_support[0]
    result = adapt(
        forward, params, buffers, x, y, loss_fn=F.mse_loss, steps=4, optimizer=adam(0.01)
    )
    reference = {k: p.detach().clone().requires_grad_() for k, p in params.items()}
    optimizer = torch.optim.Adam(reference.values(), lr=0.01, betas=(0.0, 0.999), eps=1e-8)
    for _ in range(4):
        optimizer.zero_grad()
        F.mse_loss(forward(reference, buffers, x), y).backward()
        optimizer.step()
    for k in params:
        torch.testing.assert_close(result.params[k], reference[k])


def test_observe_reports_every_step_including_the_start(tiny_mlp, sinusoid_batch):
    _, forward, params, buffers = tiny_mlp
    x, y = sinusoid_batch.x_support[0], sinusoid_batch.y_support[0]
    result = adapt(
        forward,
        params,
        buffers,
        x,
        y,
        loss_fn=F.mse_loss,
        steps=3,
        optimizer=sgd(0.1),
        observe=lambda fast: {"loss": F.mse_loss(forward(fast, buffers, x), y)},
    )
    assert result.observations["loss"].shape == (4,)
    torch.testing.assert_close(result.observations["loss"][:3], result.losses)


def finite_difference_gradient(loss_of, params, eps=1e-6):
    grads = {}
    for name, value in params.items():
        flat = value.detach().clone().flatten()
        grad = torch.zeros_like(flat)
        for i in range(flat.numel()):
            shifted = []
            for sign in (1, -1):
                probe = flat.clone()
                probe[i] += sign * eps
                shifted.append(loss_of({**params, name: probe.view_as(value)}).item())
            grad[i] = (shifted[0] - shifted[1]) / (2 * eps)
        grads[name] = grad.view_as(value)
    return grads


def test_second_order_meta_gradient_equals_finite_differences(
    tiny_mlp, sinusoid_batch, gradient_of
):
    model, forward, params, buffers = tiny_mlp
    batch = next(sinusoid_batch.chunks(2))
    grads, _ = maml_gradient(gradient_of, model, batch, steps=2, lr=0.1)

    def loss_of(theta):
        losses = []
        for xs, ys, xq, yq in zip(*batch.tensors()):
            fast = adapt(
                forward, theta, buffers, xs, ys, loss_fn=F.mse_loss, steps=2, optimizer=sgd(0.1)
            ).params
            losses.append(F.mse_loss(forward(fast, buffers, xq), yq))
        return torch.stack(losses).mean()

    reference = finite_difference_gradient(loss_of, {k: p.detach() for k, p in params.items()})
    first_order, _ = maml_gradient(gradient_of, model, batch, steps=2, lr=0.1, first_order=True)
    for k in params:
        torch.testing.assert_close(grads[k], reference[k], rtol=1e-6, atol=1e-8)
    difference = sum((grads[k] - first_order[k]).abs().sum() for k in params)
    assert difference > 1e-3, "the second-order meta-gradient must differ from the first-order one"


def test_first_order_meta_gradient_is_query_gradient_at_detached_adapted_params(
    tiny_mlp, sinusoid_batch, gradient_of
):
    model, forward, params, buffers = tiny_mlp
    grads, _ = maml_gradient(gradient_of, model, sinusoid_batch, first_order=True)
    expected = {k: torch.zeros_like(p) for k, p in params.items()}
    for xs, ys, xq, yq in zip(*sinusoid_batch.tensors()):
        fast = adapt(
            forward, params, buffers, xs, ys, loss_fn=F.mse_loss, steps=2, optimizer=sgd(0.05)
        )
        phi = {k: p.detach().requires_grad_() for k, p in fast.params.items()}
        task_grads = torch.autograd.grad(
            F.mse_loss(forward(phi, buffers, xq), yq), list(phi.values())
        )
        for k, g in zip(phi, task_grads):
            expected[k] += g / sinusoid_batch.num_tasks
    for k in params:
        torch.testing.assert_close(grads[k], expected[k])


@pytest.mark.parametrize("first_order", [False, True])
def test_zero_inner_steps_is_the_plain_supervised_gradient(
    tiny_mlp, sinusoid_batch, gradient_of, first_order
):
    model, forward, params, buffers = tiny_mlp
    grads, _ = maml_gradient(gradient_of, model, sinusoid_batch, steps=0, first_order=first_order)
    outputs = torch.func.vmap(lambda x: forward(params, buffers, x))(sinusoid_batch.x_query)
    per_task = ((outputs - sinusoid_batch.y_query) ** 2).mean(dim=(1, 2))
    expected = torch.autograd.grad(per_task.mean(), list(params.values()))
    for k, g in zip(params, expected):
        torch.testing.assert_close(grads[k], g)


@pytest.mark.parametrize(("name", "lr"), [("sgd", 0.05), ("adam", 0.01)])
def test_reptile_update_is_theta_minus_mean_adapted_parameters(
    tiny_mlp, sinusoid_batch, gradient_of, name, lr
):
    model, forward, params, buffers = tiny_mlp
    inner = {"sgd": sgd, "adam": adam}[name](lr)
    algorithm = Reptile(inner_steps=3, inner_lr=lr, inner_optimizer=name)
    grads, _ = gradient_of(algorithm, model, REGRESSION, sinusoid_batch, "vmap")
    phis = [
        adapt(forward, params, buffers, xs, ys, loss_fn=F.mse_loss, steps=3, optimizer=inner).params
        for xs, ys, _, _ in zip(*sinusoid_batch.tensors())
    ]
    mean_phi = {k: torch.stack([phi[k] for phi in phis]).mean(0).detach() for k in params}
    for k in params:
        torch.testing.assert_close(grads[k], params[k].detach() - mean_phi[k])
    # Through the outer optimizer: SGD with step size ε moves θ a fraction ε towards mean φ.
    theta = {k: p.detach().clone() for k, p in params.items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for k, p in params.items():
        p.grad = grads[k]
    optimizer.step()
    for k in params:
        torch.testing.assert_close(params[k].detach(), theta[k] + 0.5 * (mean_phi[k] - theta[k]))


def test_pretrain_gradient_is_supervised_gradient_on_all_examples(
    tiny_mlp, sinusoid_batch, gradient_of
):
    model, forward, params, buffers = tiny_mlp
    algorithm = Pretrain(inner_steps=1, inner_lr=0.01)
    grads, _ = gradient_of(algorithm, model, REGRESSION, sinusoid_batch, "loop")
    x = torch.cat([sinusoid_batch.x_support, sinusoid_batch.x_query], dim=1)
    y = torch.cat([sinusoid_batch.y_support, sinusoid_batch.y_query], dim=1)
    loss = F.mse_loss(forward(params, buffers, x.flatten(0, 1)), y.flatten(0, 1))
    for k, g in zip(params, torch.autograd.grad(loss, list(params.values()))):
        torch.testing.assert_close(grads[k], g)
