"""What a sweep runs: its cells, each a set of config overrides, checked before anything runs.

Two ways to say it, as people already write sweeps:
- a grid of Hydra-style comma lists, `task.n_way=2,3,5 model.hidden=[32],[64]` (commas inside
  brackets, braces or quotes belong to a value);
- a W&B sweep file (`method: grid | random`, `parameters.<key>.values` or `.value`, for random
  also `min`/`max` with a `distribution`, `run_cap`, `metric`), so an existing one works as is.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from metagrad.config import Config, flatten, load_config
from metagrad.errors import ConfigError

NOT_IDENTITY = (
    "name",
    "task.data_root",
    "train.device",
    "train.strategy",
    "train.chunk_size",
    "train.max_memory",
    "train.checkpoint_inner",
    "train.log_every",
    "train.ckpt_every",
    "train.keep_checkpoints",
)
"""Config fields that change where or how fast a run goes, not what it learns: a cell's hash
leaves them out, so the same sweep finds its runs again on another machine or memory budget."""

DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform")
"""W&B distributions a random sweep may draw from between `min` and `max`."""


@dataclass(frozen=True)
class Cell:
    """One run of a sweep: the swept keys' values, as overrides of the base config."""

    values: dict[str, Any]
    """Swept key → value, in the sweep's key order."""

    @property
    def overrides(self) -> list[str]:
        """`key=value` overrides; values written as JSON, which YAML reads back unchanged."""
        return [f"{key}={json.dumps(value)}" for key, value in self.values.items()]

    def describe(self) -> str:
        return " ".join(f"{key}={json.dumps(value)}" for key, value in self.values.items())


@dataclass(frozen=True)
class Sweep:
    """A base config (preset or YAML), overrides common to every cell, and the cells."""

    base: str
    common: tuple[str, ...]
    cells: tuple[Cell, ...]
    metric: dict[str, str] | None = None
    """W&B's `metric` (`name`, `goal`): what a report ranks cells by; None = the objective's."""

    def config(self, cell: Cell) -> Config:
        """The cell's resolved config; an invalid key or value is a `ConfigError` naming the
        cell."""
        try:
            return load_config(self.base, [*self.common, *cell.overrides])
        except ConfigError as err:
            raise ConfigError(f"sweep cell {cell.describe()}: {err}") from None

    def resolved(self) -> list[tuple[Cell, Config]]:
        """Every cell with its config, all checked before the first one runs."""
        return [(cell, self.config(cell)) for cell in self.cells]


def identity(config: Config) -> str:
    """A run's name in a sweep: 12 hex digits of the SHA-256 of the config fields that differ
    from `Config()`'s defaults, less those of `NOT_IDENTITY`, as sorted-key JSON. A field added
    to metagrad later, with a default that keeps today's behaviour, leaves every name as is."""
    defaults = flatten(Config().to_dict())
    kept = {
        key: value
        for key, value in flatten(config.to_dict()).items()
        if not _excluded(key) and (key not in defaults or defaults[key] != value)
    }
    text = json.dumps(kept, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _excluded(key: str) -> bool:
    return any(key == field or key.startswith(field + ".") for field in NOT_IDENTITY)


def grid_sweep(base: str, axes: list[str], common: list[str] = ()) -> Sweep:
    """A grid from `key=v1,v2,...` arguments: every combination, the first key varying
    slowest."""
    keys, choices = [], []
    for axis in axes:
        key, sep, text = axis.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise ConfigError(
                f"sweep axis {axis!r} is not of the form key=v1,v2,...; write e.g. task.n_way=2,3,5"
            )
        if key in keys:
            raise ConfigError(f"sweep key {key!r} is given twice; give each key once")
        values = []
        for piece in split_values(text, key):
            try:
                values.append(yaml.safe_load(piece))
            except yaml.YAMLError as err:
                raise ConfigError(
                    f"sweep key {key!r}: value {piece!r} is not valid: {err}"
                ) from None
        keys.append(key)
        choices.append(values)
    cells = tuple(
        Cell(dict(zip(keys, combination, strict=True)))
        for combination in itertools.product(*choices)
    )
    return Sweep(base, tuple(common), cells)


def split_values(text: str, key: str) -> list[str]:
    """`2,3,[32,32],"a,b"` → `["2", "3", "[32,32]", '"a,b"']`: commas at depth 0 only."""
    pieces, depth, quote, current = [], 0, None, ""
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            pieces.append(current)
            current = ""
            continue
        current += char
    pieces.append(current)
    if depth or quote or any(not p.strip() for p in pieces):
        raise ConfigError(
            f"sweep key {key!r}: cannot read the values {text!r} (an empty value, or an "
            "unclosed bracket or quote); write e.g. model.hidden=[32],[64]"
        )
    return [p.strip() for p in pieces]


def spec_sweep(base: str, path: Path, common: list[str] = (), count: int | None = None) -> Sweep:
    """A sweep from a W&B sweep file (the subset that needs no W&B server)."""
    try:
        spec = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"sweep file {path}: cannot read it as YAML ({err})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("parameters"), dict):
        raise ConfigError(
            f"sweep file {path} has no `parameters` mapping; write parameters: "
            "{task.n_way: {values: [2, 3, 5]}}"
        )
    method = spec.get("method", "grid")
    if method not in ("grid", "random"):
        raise ConfigError(
            f"sweep file {path}: method {method!r} is not supported here (it needs a W&B "
            "server); use method: grid or method: random"
        )
    metric = spec.get("metric")
    if metric is not None and not (isinstance(metric, dict) and "name" in metric):
        raise ConfigError(f"sweep file {path}: metric must be a mapping with a name")
    if metric is not None and metric.get("goal", "maximize") not in ("maximize", "minimize"):
        raise ConfigError(f"sweep file {path}: metric.goal must be maximize or minimize")
    parameters = {str(k): _parameter(path, str(k), v) for k, v in spec["parameters"].items()}
    if method == "grid":
        ranged = [k for k, p in parameters.items() if "values" not in p and "value" not in p]
        if ranged:
            raise ConfigError(
                f"sweep file {path}: a grid needs values for every parameter, but {ranged[0]!r} "
                "has a range; give it values: [...], or use method: random"
            )
        axes = [[p["value"]] if "value" in p else p["values"] for p in parameters.values()]
        combinations = list(itertools.product(*axes))
    else:
        runs = count or spec.get("run_cap")
        if not isinstance(runs, int) or runs < 1:
            raise ConfigError(
                f"sweep file {path}: a random sweep needs a number of runs; add run_cap: N to "
                "the file or pass --count N"
            )
        rng = np.random.default_rng(int(spec.get("seed", 0)))
        combinations = [tuple(_draw(rng, p) for p in parameters.values()) for _ in range(runs)]
    metric = {"name": metric["name"], "goal": metric.get("goal", "maximize")} if metric else None
    cells = tuple(
        Cell(dict(zip(parameters, combination, strict=True))) for combination in combinations
    )
    return Sweep(base, tuple(common), cells, metric)


def _parameter(path: Path, key: str, spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise ConfigError(
            f"sweep file {path}: parameter {key!r} must be a mapping such as "
            "{values: [1, 2]}, {value: 1} or {min: 0.001, max: 0.1, distribution: "
            "log_uniform_values}"
        )
    allowed = {"values", "value", "min", "max", "distribution", "probabilities"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(
            f"sweep file {path}: parameter {key!r} has {unknown[0]!r}, which is not supported; "
            f"use {', '.join(sorted(allowed))}"
        )
    if "values" in spec and not (isinstance(spec["values"], list) and spec["values"]):
        raise ConfigError(f"sweep file {path}: parameter {key!r}: values must be a non-empty list")
    if "values" not in spec and "value" not in spec:
        if "min" not in spec or "max" not in spec:
            raise ConfigError(
                f"sweep file {path}: parameter {key!r} needs values, value, or min and max"
            )
        distribution = spec.get("distribution", "uniform")
        if distribution not in DISTRIBUTIONS:
            raise ConfigError(
                f"sweep file {path}: parameter {key!r}: distribution {distribution!r} is not "
                f"supported; use one of {', '.join(DISTRIBUTIONS)}"
            )
        if not spec["min"] < spec["max"]:
            raise ConfigError(f"sweep file {path}: parameter {key!r}: min must be below max")
    return spec


def _draw(rng: np.random.Generator, spec: dict[str, Any]) -> Any:
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][rng.choice(len(spec["values"]), p=spec.get("probabilities"))]
    low, high = spec["min"], spec["max"]
    distribution = spec.get("distribution", "uniform")
    if distribution == "int_uniform":
        return int(rng.integers(low, high, endpoint=True))
    if distribution == "log_uniform_values":
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return float(rng.uniform(low, high))
