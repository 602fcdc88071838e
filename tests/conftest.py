from pathlib import Path

import pytest
import torch

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
