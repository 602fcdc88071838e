"""The inner loop: the only place in metagrad where parameters take gradient steps on a task.

Training (every algorithm) and evaluation both call `adapt()`. It is pure: it takes parameter
dicts and returns new ones, mutates no module and touches no global RNG, so it runs unchanged
inside `torch.func.vmap` and inside a Python loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch.func import grad_and_value

from metagrad.models.functional import Forward, Params

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Observe = Callable[[Params], dict[str, torch.Tensor]]
StepRunner = Callable[[Callable, Any], tuple[Any, tuple]]
"""`run(step, carry) -> step(carry)`, possibly differently (recomputed in the backward pass, in
which case only the tensors in `carry` are differentiated: a step takes every tensor it depends
on from its carry)."""


@dataclass(frozen=True)
class InnerOptimizer:
    """A functional optimizer: `init(params) -> state`, `step(params, grads, state) -> (params,
    state)`.

    The state is returned, never hidden, so a step stays a pure function (vmap-able, and
    differentiable end to end for second-order MAML).

    Every tensor a step depends on must reach it through `params`, `grads` or `state`, never
    through a closure: a learned rate, say, goes into the state that `init` returns and `step`
    reads it from there (`MetaSGD.learned_sgd`, `MAMLPlusPlus.stepper`). With inner-step
    checkpointing (`checkpoint_inner`) a step is recomputed from what it is passed, and a tensor
    it captured from outside gets no meta-gradient.
    """

    init: Callable[[Params], tuple]
    step: Callable[[Params, Params, tuple], tuple[Params, tuple]]


def sgd(lr: float) -> InnerOptimizer:
    """φ ← φ − α·g (the MAML inner loop)."""

    def step(params: Params, grads: Params, state: tuple) -> tuple[Params, tuple]:
        return {k: torch.add(p, grads[k], alpha=-lr) for k, p in params.items()}, state

    return InnerOptimizer(init=lambda params: (), step=step)


def adam(
    lr: float, betas: tuple[float, float] = (0.0, 0.999), eps: float = 1e-8, eps_root: float = 1e-16
) -> InnerOptimizer:
    """Adam with bias correction; β1 = 0 by default, as in the Reptile paper's inner loop.

    `eps_root` inside the square root keeps second-order meta-gradients finite where a gradient
    entry is exactly zero (a dead ReLU): d√v/dv is infinite at v = 0.
    """
    beta1, beta2 = betas

    def init(params: Params) -> tuple:
        zeros = {k: torch.zeros_like(p) for k, p in params.items()}
        return (0, zeros, dict(zeros))

    def step(params: Params, grads: Params, state: tuple) -> tuple[Params, tuple]:
        count, first, second = state
        count += 1
        first = {k: beta1 * first[k] + (1 - beta1) * g for k, g in grads.items()}
        second = {k: beta2 * second[k] + (1 - beta2) * g * g for k, g in grads.items()}
        scale1, scale2 = 1 - beta1**count, 1 - beta2**count
        params = {
            k: p - lr * (first[k] / scale1) / ((second[k] / scale2 + eps_root).sqrt() + eps)
            for k, p in params.items()
        }
        return params, (count, first, second)

    return InnerOptimizer(init=init, step=step)


INNER_OPTIMIZERS: dict[str, Callable[[float], InnerOptimizer]] = {"sgd": sgd, "adam": adam}


class Adaptation(NamedTuple):
    params: Params
    """The adapted (fast) parameters φ."""
    losses: torch.Tensor
    """Support loss before each step, `[steps]`."""
    observations: dict[str, torch.Tensor]
    """`observe(φ)` after 0, 1, …, steps steps, each `[steps + 1]`; empty without `observe`."""
    initial_outputs: torch.Tensor | None
    """The network's support outputs at the initial parameters, detached (None with 0 steps):
    pre-adaptation metrics without another forward pass."""


def adapt(
    forward: Forward,
    params: Params,
    buffers: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    steps: int,
    optimizer: InnerOptimizer,
    first_order: bool = False,
    observe: Observe | None = None,
    run_step: StepRunner | None = None,
) -> Adaptation:
    """Take `steps` optimizer steps on the support loss `loss_fn(forward(φ, buffers, x), y)`.

    Gradients are kept in the graph (second order) unless `first_order`, which detaches them:
    φ then depends on θ only through the identity, which is first-order MAML. `run_step`, when
    given, runs each step (the execution machinery passes one that recomputes a step in the
    backward pass instead of keeping its activations: same gradients, less memory).

    `buffers` are the tensors the network uses but the steps do not change: the parameters
    that are not adapted (ANIL's body), and they are differentiated like `params`. Each step is
    passed `(params, optimizer state, buffers)`, so with `run_step` a tensor that `forward` or
    `optimizer` captures in a closure instead gets no gradient: pass it in `buffers` or in the
    optimizer's state.
    """

    def support_loss(fast: Params, fixed: Params) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = forward(fast, fixed, x)
        return loss_fn(outputs, y), outputs.detach()

    def step(carry: tuple[Params, tuple, Params]) -> tuple[tuple[Params, tuple, Params], tuple]:
        fast, state, fixed = carry
        grads, (loss, outputs) = grad_and_value(support_loss, has_aux=True)(fast, fixed)
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        return (*optimizer.step(fast, grads, state), fixed), (loss.detach(), outputs)

    state = optimizer.init(params)
    losses, initial_outputs = [], None
    observed = [observe(params)] if observe else []
    for _ in range(steps):
        carry = (params, state, buffers)
        (params, state, buffers), (loss, outputs) = (
            run_step(step, carry) if run_step else step(carry)
        )
        if initial_outputs is None:
            initial_outputs = outputs
        losses.append(loss)
        if observe:
            observed.append(observe(params))
    observations = (
        {k: torch.stack([o[k] for o in observed]) for k in observed[0]} if observe else {}
    )
    stacked = torch.stack(losses) if losses else x.new_zeros(0)
    return Adaptation(params, stacked, observations, initial_outputs)
