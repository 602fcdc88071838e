from pathlib import Path

import pytest
import torch

from metagrad.algorithms import MetaParameters
from metagrad.execution import ExecutionPlan, Network, meta_gradient
from metagrad.models import MLP, functional_forward, meta_parameters
from metagrad.tasks import SinusoidTasks


@pytest.fixture
def tiny_mlp():
    """A float64 1-8-8-1 MLP: small enough for finite differences, deep enough to be nonlinear."""
    torch.manual_seed(0)
    model = MLP(1, (8, 8), 1).double()
    params, buffers = meta_parameters(model)
    return model, functional_forward(model), params, buffers


@pytest.fixture
def sinusoid_batch():
    return SinusoidTasks(k_shot=5, n_query=7, seed=3).sample("train", 0, 6).to("cpu", torch.float64)


@pytest.fixture(scope="session")
def omniglot_root():
    """The real Omniglot archives, beside the project as `../shared/datasets/omniglot`."""
    root = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "omniglot"
    if not (root / "images_background.zip").is_file():
        pytest.skip(f"the real Omniglot archives are not in {root}")
    return root


def run_meta_gradient(
    algorithm, model, objective, batch, strategy, chunk_size=None, checkpoint_inner=False
):
    """The meta-gradient (by parameter name) and metrics of `algorithm` on `model`'s current
    parameters, executed as `strategy`."""
    network = Network(model, objective)
    algorithm = algorithm.for_network(network.normalisation)
    meta = MetaParameters(
        dict(model.named_parameters()),
        {
            k: v.detach().requires_grad_()
            for k, v in algorithm.extra_parameters(dict(model.named_parameters())).items()
        },
    )
    plan = ExecutionPlan(strategy, chunk_size, checkpoint_inner)
    grads, metrics = meta_gradient(algorithm, network, meta, batch, plan)
    return grads.named(), metrics


@pytest.fixture
def gradient_of():
    return run_meta_gradient
