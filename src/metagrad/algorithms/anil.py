"""ANIL, Almost No Inner Loop (Raghu, Raghu, Bengio and Vinyals, 2020)."""

from __future__ import annotations

from dataclasses import dataclass

from metagrad.algorithms.base import split_head
from metagrad.algorithms.maml import MAML
from metagrad.models.functional import Params


@dataclass(frozen=True)
class ANIL(MAML):
    """MAML whose inner loop adapts the head alone, in training and at test time.

    The body is meta-learned through the query loss only: directly (φ keeps θ's body) and,
    second order, through the head's inner steps, whose gradients depend on the body's features.
    With `first_order` the inner gradients are detached, and the body's meta-gradient is the
    query loss gradient at φ.

    The head is every parameter named `head…` (the Conv-4 and ResNet-12 name their last layer
    `head`); in a network without one, the last two parameters (its last linear layer).
    """

    head: str = "head."
    """Name prefix of the head's parameters."""

    def split(self, params: Params) -> tuple[Params, Params]:
        """`(adapted, fixed)`: the parameters the inner loop adapts, and the others."""
        body, head = split_head(params, self.head)
        return head, body
