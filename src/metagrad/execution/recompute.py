"""Gradient checkpointing for the inner loop: keep each step's inputs, not its activations.

`torch.utils.checkpoint` cannot wrap an inner step: its non-reentrant form relies on saved-tensor
hooks, which `torch.func.grad` refuses, and its reentrant form does not support
`torch.autograd.grad`. `recomputed` is the same idea as a custom autograd function: the step runs
without a graph, and the backward pass runs it again, with a graph, just for the
vector-Jacobian product. The meta-gradient is unchanged; memory holds one step's graph at a
time instead of all of them. Not under `vmap` (the loop and batched strategies only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

Carry = Any
"""A pytree of tensors (and plain values) threaded through the steps: parameters, state."""


def recomputed(
    step: Callable[[Carry], tuple[Carry, tuple[torch.Tensor, ...]]], carry: Carry
) -> tuple[Carry, tuple[torch.Tensor, ...]]:
    """`step(carry) -> (carry, extras)` without storing its activations.

    `extras` are values to report (losses, outputs): returned detached, not differentiable.
    """
    leaves, spec = tree_flatten(carry)
    positions = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
    structure: dict[str, Any] = {}

    def run(tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        filled = list(leaves)
        for position, tensor in zip(positions, tensors, strict=True):
            filled[position] = tensor
        new_carry, extras = step(tree_unflatten(filled, spec))
        new_leaves, new_spec = tree_flatten(new_carry)
        structure.update(spec=new_spec, leaves=new_leaves, extras=len(extras))
        return (*(x for x in new_leaves if isinstance(x, torch.Tensor)), *extras)

    outputs = _Recompute.apply(run, structure, *(leaves[i] for i in positions))
    count = len(outputs) - structure["extras"]
    new_tensors = iter(outputs[:count])
    new_leaves = [
        next(new_tensors) if isinstance(x, torch.Tensor) else x for x in structure["leaves"]
    ]
    return tree_unflatten(new_leaves, structure["spec"]), tuple(outputs[count:])


class _Recompute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run, structure, *tensors):
        ctx.run = run
        ctx.save_for_backward(*tensors)
        outputs = run(tensors)
        extras = outputs[len(outputs) - structure["extras"] :]
        ctx.mark_non_differentiable(*extras)
        return tuple(o.detach() for o in outputs[: len(outputs) - len(extras)]) + extras

    @staticmethod
    def backward(ctx, *output_grads):
        needs = ctx.needs_input_grad[2:]
        inputs = [
            t.detach().requires_grad_(need)
            for t, need in zip(ctx.saved_tensors, needs, strict=True)
        ]
        with torch.enable_grad():
            outputs = ctx.run(tuple(inputs))
        pairs = [
            (o, g)
            for o, g in zip(outputs, output_grads, strict=False)
            if g is not None and o.requires_grad
        ]
        wrt = [t for t in inputs if t.requires_grad]
        grads = iter(
            torch.autograd.grad(
                [o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True
            )
            if pairs and wrt
            else [None] * len(wrt)
        )
        return (None, None, *(next(grads) if t.requires_grad else None for t in inputs))
