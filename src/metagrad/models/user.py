"""A user's own network, named in a config as `package.module:function`."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from metagrad.errors import ConfigError
from metagrad.user_code import call, import_object

SHAPE_ARGUMENTS = ("num_classes", "in_channels", "image_size")
"""Arguments filled from the task when the factory takes them and `model.kwargs` does not."""


def user_model(name: str, kwargs: Mapping[str, Any], **task_shape: int) -> nn.Module:
    """Call the factory `name` (`package.module:function`, or a class) with `kwargs`.

    Arguments the factory accepts among `num_classes`, `in_channels` and `image_size` are filled
    from `task_shape` unless `kwargs` sets them, so one factory serves 5- and 20-way tasks.
    """
    factory = import_object(name, "model.name")
    arguments = dict(kwargs)
    accepted = _parameters(factory)
    for key in SHAPE_ARGUMENTS:
        if key in accepted and key not in arguments:
            arguments[key] = task_shape[key]
    model = call(factory, arguments, name, "model.name")
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model.name = {name!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _parameters(factory: Any) -> set[str]:
    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()
