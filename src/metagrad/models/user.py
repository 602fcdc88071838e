"""A user's own network, named in a config as `package.module:function`."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from metagrad.errors import ConfigError

SHAPE_ARGUMENTS = ("num_classes", "in_channels", "image_size")
"""Arguments filled from the task when the factory takes them and `model.kwargs` does not."""


def user_model(name: str, kwargs: Mapping[str, Any], **task_shape: int) -> nn.Module:
    """Call the factory `name` (`package.module:function`, or a class) with `kwargs`.

    Arguments the factory accepts among `num_classes`, `in_channels` and `image_size` are filled
    from `task_shape` unless `kwargs` sets them, so one factory serves 5- and 20-way tasks.
    """
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise ConfigError(
            f"model.name = {name!r}: write a built-in network (mlp, conv4) or "
            "package.module:function"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"model.name = {name!r}: cannot import {module_name!r} ({err}); make sure it is "
            "installed or on PYTHONPATH (run from the folder that holds it)"
        ) from err
    factory = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ConfigError(f"model.name = {name!r}: {module_name} has no {attribute!r}")
    arguments = dict(kwargs)
    accepted = _parameters(factory)
    for key in SHAPE_ARGUMENTS:
        if key in accepted and key not in arguments:
            arguments[key] = task_shape[key]
    try:
        model = factory(**arguments)
    except TypeError as err:
        raise ConfigError(
            f"model.name = {name!r} could not be called with {arguments}: {err}; set "
            "model.kwargs to the arguments it takes"
        ) from err
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
