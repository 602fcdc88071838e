"""Task streams as pure functions of (seed, split, index): no global RNG anywhere."""

from __future__ import annotations

import numpy as np
import torch

SPLITS = ("train", "val", "test")


def task_generator(seed: int, split: str, index: int) -> torch.Generator:
    """A CPU generator for meta-batch `index` of `split`, independent of every other batch.

    The three integers are mixed by numpy's SeedSequence, so nearby seeds and indices give
    unrelated streams, and resuming or sharding a run needs nothing but the index.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    entropy = [seed, SPLITS.index(split), index]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    generator = torch.Generator()
    generator.manual_seed(int(state[0]) << 32 | int(state[1]))
    return generator
