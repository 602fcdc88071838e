"""BOIL, Body Only update in Inner Loop (Oh, Yoo, Kim and Yun, 2021)."""

from __future__ import annotations

from dataclasses import dataclass

from metagrad.algorithms.anil import ANIL
from metagrad.algorithms.base import split_head
from metagrad.models.functional import Params


@dataclass(frozen=True)
class BOIL(ANIL):
    """MAML whose inner loop adapts the body alone and keeps the head frozen, in training and at
    test time: ANIL with head and body exchanged. The head is still meta-learned, through the
    query loss; it is chosen as in `ANIL` (`head…`, or else the last two parameters)."""

    def split(self, params: Params) -> tuple[Params, Params]:
        return split_head(params, self.head)
