"""ResNet-12: shapes, the standard parameter count, and calling it as a pure function."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from metagrad.models.batch_norm import TaskBatchNorm
from metagrad.models.resnet12 import ResNet12

SMALL = (8, 8, 16, 16)


@pytest.mark.parametrize(("in_channels", "size"), [(1, 28), (3, 84)])
def test_output_shape(in_channels: int, size: int) -> None:
    model = ResNet12(in_channels, num_classes=5, image_size=size, channels=SMALL)
    assert model(torch.rand(6, in_channels, size, size)).shape == (6, 5)


def expected_parameters(in_channels: int, channels: tuple[int, ...], num_classes: int) -> int:
    """Per block: three 3x3 convs and a 1x1 shortcut without bias, each with BatchNorm's
    weight and bias; then the linear head."""
    total, cin = 0, in_channels
    for cout in channels:
        total += 9 * cin * cout + 2 * 9 * cout * cout + cin * cout + 4 * 2 * cout
        cin = cout
    return total + cin * num_classes + num_classes


def test_parameter_count_is_the_standard_one() -> None:
    model = ResNet12(3, num_classes=5, image_size=84)
    count = sum(p.numel() for p in model.parameters())
    assert count == expected_parameters(3, (64, 160, 320, 640), 5)
    assert count - (640 * 5 + 5) == 12_424_320
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 16
    assert sum(isinstance(m, TaskBatchNorm) for m in model.modules()) == 16
    assert not list(model.buffers())


def test_functional_call_with_own_parameters_matches_the_module() -> None:
    torch.manual_seed(0)
    model = ResNet12(3, num_classes=4, image_size=16, channels=SMALL)
    x = torch.rand(5, 3, 16, 16)
    params = dict(model.named_parameters())
    assert torch.equal(functional_call(model, params, (x,)), model(x))
    shifted = {name: p + 0.1 for name, p in params.items()}
    assert not torch.allclose(functional_call(model, shifted, (x,)), model(x))


def test_too_small_images_and_wrong_widths_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16, got 8"):
        ResNet12(1, 5, image_size=8, channels=SMALL)
    with pytest.raises(ValueError, match="give 4 channel widths"):
        ResNet12(1, 5, image_size=28, channels=(8, 8, 16))
