"""A short meta-training run on 2D navigation learns to adapt (about 20 s on 2 CPU cores)."""

import pytest
import torch

from metagrad.rl import Navigation2D, evaluate, fixed_tasks, train_maml


@pytest.mark.slow
def test_short_navigation_run_improves_the_post_adaptation_return():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    env = Navigation2D()
    result = train_maml(env, 15, seed=0, meta_batch=10, rollouts=10)
    history = result.history
    assert len(history) == 15
    assert all(0 < m.kl <= 0.01 for m in history if m.fraction > 0)
    goals = fixed_tasks(env, 0, "test", 0, 20)
    initial = train_maml(env, 0, seed=0).params

    def adapted(params):
        return evaluate(
            params, env, goals, rollouts=10, steps=1, generator=torch.Generator().manual_seed(5)
        )

    before, after = adapted(initial), adapted(result.params)
    # A random policy wanders off (about −110 after one step); 15 meta-iterations bring the
    # adapted return to about −40. Require a clear part of that.
    assert after.returns[1] > before.returns[1] + 30
    assert after.returns[1] > after.returns[0]
