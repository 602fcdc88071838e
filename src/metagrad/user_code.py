"""Code of the user's own, named in a config as `package.module:name`."""

from __future__ import annotations

import importlib
from typing import Any

from metagrad.errors import ConfigError


def is_user_code(name: str) -> bool:
    return ":" in name


def import_object(name: str, field: str) -> Any:
    """The object `name` (`package.module:attribute`) names; `field` is the config field that
    named it, for the error messages."""
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{field} = {name!r}: write package.module:name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"{field} = {name!r}: cannot import {module_name!r} ({err}); make sure it is "
            "installed or on PYTHONPATH (run from the folder that holds it)"
        ) from err
    found = module
    for part in attribute.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise ConfigError(f"{field} = {name!r}: {module_name} has no {attribute!r}")
    return found


def call(factory: Any, arguments: dict[str, Any], name: str, field: str) -> Any:
    """`factory(**arguments)`, a wrong signature reported as a config error."""
    try:
        return factory(**arguments)
    except TypeError as err:
        raise ConfigError(
            f"{field} = {name!r} could not be called with {arguments}: {err}; set the "
            f"matching kwargs ({field.rsplit('.', 1)[0]}.kwargs) to the arguments it takes"
        ) from err
