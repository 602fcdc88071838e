"""How fast can a meta-step be on this machine? FLOPs of the meta-step against the best
throughput the machine reaches on the same convolutions.

    python benchmarks/floor.py omniglot-5w1s

Counts the FLOPs of one meta-step (torch.utils.flop_counter, learn2learn's formulation when
installed, else metagrad's loop) and of its query pass alone, then times the query pass as one
perfectly batched call with shared weights: no per-task cost at all, the most favourable
shape these convolutions can have. That time bounds every exact fp32 meta-step from below.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from metagrad.bench.peers import installed
from metagrad.bench.settings import setting_config, synthetic_batch
from metagrad.bench.worker import metagrad_step, peer_step
from metagrad.build import init_model
from metagrad.execution.allocator import tune_allocator
from metagrad.models import with_batch_norm
from metagrad.models.functional import functional_forward, meta_parameters


def median_seconds(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(setting: str) -> None:
    tune_allocator()
    config = setting_config(setting)
    batch = synthetic_batch(config)
    who = "learn2learn" if installed("learn2learn") else "loop"
    step = (peer_step if who == "learn2learn" else metagrad_step)(config, batch, who)[0]
    with FlopCounterMode(display=False) as counter:
        step()
    step_flops = counter.get_total_flops()

    model = init_model(config)
    params, buffers = meta_parameters(model)
    forward = functional_forward(with_batch_norm(model, fused=True))
    x, y = batch.x_query.flatten(0, 1), batch.y_query.flatten()

    def shared_query_pass():
        loss = F.cross_entropy(forward(params, buffers, x), y)
        torch.autograd.grad(loss, list(params.values()))

    with FlopCounterMode(display=False) as counter:
        shared_query_pass()
    query_flops = counter.get_total_flops()
    seconds = median_seconds(shared_query_pass)
    step_seconds = median_seconds(step)
    rate = query_flops / seconds
    print(f"setting {setting}, {torch.get_num_threads()} threads")
    print(f"meta-step ({who}): {step_flops / 1e9:.1f} GFLOP, {step_seconds:.3f} s")
    print(f"query pass (forward + backward): {query_flops / 1e9:.1f} GFLOP")
    print(f"query pass as one shared-weight batch: {seconds:.3f} s = {rate / 1e9:.0f} GFLOP/s")
    print(
        f"floor of the meta-step at that rate: {step_flops / rate:.3f} s "
        f"({step_seconds / (step_flops / rate):.2f}× below {who}); "
        f"floor of the query pass alone: {seconds:.3f} s "
        f"({step_seconds / seconds:.2f}× below {who})"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "omniglot-5w1s")
