"""Fixed evaluation tasks as a file: the exact episodes `metagrad eval` evaluates on, so that other
runs, or other code, can be evaluated on exactly the same tasks.

Task i of a set is task index i of the split, drawn on its own by the evaluation task source
(`build_tasks(config, evaluation=True)`), as `metagrad eval` draws its `eval.num_tasks` tasks. An
image task set holds indices, not pixels (`EpisodeIndices`): per task its classes (index in the
split and name; a rotated copy is a class of its own, named `.../rotNNN`), the support and query
examples of each class (index among the class's examples), the order of the support and of the
query set, and the labels. Other tasks (sinusoid) are small: their four tensors are stored.

A file (`torch.save`; `load_tasks` reads it with `weights_only=True`) is a dict:

- `format`: `"metagrad-tasks/1"`; `sha256`: the content hash (`TaskSet.sha256`)
- `dataset`, `split`; `image_shape`: `[C, H, W]` of the images, or None
- `class_names`: `[T][N]` names, or None for tasks that are not image episodes
- `arrays`: the `EpisodeIndices` fields (int64, on the CPU), or `x_support`, `y_support`,
  `x_query` and `y_query`
- `metadata` (not hashed): num_tasks, n_way, k_shot, n_query, image_size, the metagrad version
  and the config fields that define the tasks
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from metagrad.build import TaskSource, build_tasks
from metagrad.config import Config
from metagrad.data.class_images import ClassImages
from metagrad.errors import ConfigError, DatasetError
from metagrad.tasks.batch import TaskBatch
from metagrad.tasks.sampler import EpisodeIndices, EpisodeSampler

FORMAT = "metagrad-tasks/1"
EPISODE_ARRAYS = tuple(f.name for f in dataclasses.fields(EpisodeIndices))
TENSOR_ARRAYS = ("x_support", "y_support", "x_query", "y_query")
EVALUATION_SPLITS = ("val", "test")


@dataclass(frozen=True, eq=False)
class TaskSet:
    """Fixed tasks of one split: image episodes as indices (`class_names` given), or tensors."""

    dataset: str
    split: str
    image_shape: tuple[int, ...] | None
    class_names: tuple[tuple[str, ...], ...] | None
    arrays: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    """The file it was read from, named in errors."""

    @property
    def num_tasks(self) -> int:
        return next(iter(self.arrays.values())).shape[0]

    @cached_property
    def sha256(self) -> str:
        """The content hash, hex: sha256 of the UTF-8 bytes of the JSON object with the keys
        `dataset`, `split`, `image_shape` (a list or null), `class_names` (lists or null) and
        `arrays` (each tensor as nested lists, `Tensor.tolist()`), written as Python's `json`
        writes it with `sort_keys=True`, `separators=(",", ":")` and `ensure_ascii=False`
        (integers in decimal, floats in their shortest round-trip form). Only what defines the
        tasks is hashed, not `metadata`: the same tasks drawn by `metagrad eval` and read from
        an exported file have the same hash."""
        content = {
            "dataset": self.dataset,
            "split": self.split,
            "image_shape": None if self.image_shape is None else list(self.image_shape),
            "class_names": None
            if self.class_names is None
            else [list(c) for c in self.class_names],
            "arrays": {name: tensor.tolist() for name, tensor in self.arrays.items()},
        }
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def describe(self) -> str:
        """`600 test tasks of omniglot, 5-way 1-shot, 15 query examples per class`."""
        if self.class_names is None:
            x_support, x_query = self.arrays["x_support"], self.arrays["x_query"]
            shape = f"{x_support.shape[1]} support and {x_query.shape[1]} query examples each"
        else:
            n, k, q = self._episode_shape()
            shape = f"{n}-way {k}-shot, {q} query examples per class"
        return f"{self.num_tasks} {self.split} tasks of {self.dataset}, {shape}"

    def batches(self, config: Config, source: TaskSource, batch_size: int) -> list[TaskBatch]:
        """The tasks in meta-batches of `batch_size`, images from `source` (the evaluation task
        source of `config`), once they are checked to be tasks the run can be evaluated on."""
        if self.dataset != config.task.dataset:
            raise ConfigError(
                f"{self._where} holds tasks of task.dataset = {self.dataset}, but the run's is "
                f"{config.task.dataset}; evaluate on tasks exported from the run's config "
                "(`metagrad tasks export RUN/config.yaml`)"
            )
        episodes = self.class_names is not None
        if isinstance(source, EpisodeSampler) != episodes:
            raise ConfigError(
                f"{self._where} holds {'image episodes' if episodes else 'task tensors'}, which "
                "the run's tasks are not; export tasks from the run's config"
            )
        if not episodes:
            return list(self._tensor_batch(source).chunks(batch_size))
        indices = self._indices_in(source)
        return [
            source.gather(self.split, _tasks(indices, start, start + batch_size))
            for start in range(0, self.num_tasks, batch_size)
        ]

    @property
    def _where(self) -> str:
        return f"task file {self.path}" if self.path else "the task set"

    def _episode_shape(self) -> tuple[int, int, int]:
        return (
            self.arrays["classes"].shape[1],
            self.arrays["support"].shape[2],
            self.arrays["query"].shape[2],
        )

    def _tensor_batch(self, source: TaskSource) -> TaskBatch:
        """The stored tensors, checked against the shapes of the run's tasks."""
        batch = TaskBatch(*(self.arrays[name] for name in TENSOR_ARRAYS))
        expected = source.sample(self.split, 0, 1)
        sizes = (batch.x_support.shape[1], batch.x_query.shape[1])
        run_sizes = (expected.x_support.shape[1], expected.x_query.shape[1])
        if sizes != run_sizes:
            raise ConfigError(
                f"{self._where} holds tasks of {sizes[0]} support and {sizes[1]} query examples, "
                f"but the run's have {run_sizes[0]} and {run_sizes[1]}; evaluate with --set "
                f"eval.k_shot={sizes[0]} eval.n_query={sizes[1]} to match the file"
            )
        differ = [
            f"{name} {list(mine.shape[1:])} (the run's: {list(theirs.shape[1:])})"
            for name, mine, theirs in zip(
                TENSOR_ARRAYS, batch.tensors(), expected.tensors(), strict=True
            )
            if mine.shape[1:] != theirs.shape[1:] or mine.dtype != theirs.dtype
        ]
        if differ:
            raise ConfigError(
                f"{self._where} holds tasks of other shapes than the run's: {', '.join(differ)} "
                "per task; export tasks from the run's config"
            )
        return batch

    def _indices_in(self, source: EpisodeSampler) -> EpisodeIndices:
        """The episodes with their classes looked up by name in the run's split, checked to
        have the run's ways, shots, query examples and image shape."""
        n, k, q = self._episode_shape()
        fields = ("eval.n_way", "eval.k_shot", "eval.n_query")
        differ = [
            (name, mine, theirs)
            for name, mine, theirs in zip(
                fields, (n, k, q), (source.n_way, source.k_shot, source.n_query), strict=True
            )
            if mine != theirs
        ]
        if differ:
            raise ConfigError(
                f"{self._where} holds {n}-way {k}-shot tasks with {q} query examples per class, "
                "but the run evaluates "
                + ", ".join(f"{name} = {theirs}" for name, _, theirs in differ)
                + "; evaluate with --set "
                + " ".join(f"{name}={mine}" for name, mine, _ in differ)
                + " to match the file"
            )
        images = source.images[self.split]
        shape = tuple(images.images.shape[2:])
        if shape != self.image_shape:
            raise ConfigError(
                f"{self._where} holds tasks of {_shape(self.image_shape)} images (channels × "
                f"height × width), but the run's are {_shape(shape)}; export the tasks with the "
                "run's task.image_size and channels"
            )
        index = {name: i for i, name in enumerate(images.class_names)}
        missing = sorted({name for names in self.class_names for name in names} - index.keys())
        if missing:
            raise ConfigError(
                f"{len(missing)} classes of {self._where} are not classes of the run's "
                f"{self.split} split (e.g. {missing[0]!r}): the file was exported from other "
                "data (task.dataset, class_split, rotations or data_root); export the tasks "
                "from the run's config"
            )
        largest = _examples(self.arrays).max().item()
        if largest >= images.num_examples:
            raise ConfigError(
                f"{self._where} uses example {largest} of a class, but the classes of the run's "
                f"{self.split} split have {images.num_examples} examples; export the tasks from "
                "the run's data"
            )
        classes = torch.tensor([[index[c] for c in names] for names in self.class_names])
        return EpisodeIndices(**{**self.arrays, "classes": classes})


def draw_tasks(config: Config, source: TaskSource, split: str, num_tasks: int) -> TaskSet:
    """Tasks 0..num_tasks−1 of `split` from `source`, each drawn on its own (index i, one task)
    as `metagrad eval` draws them."""
    if isinstance(source, EpisodeSampler):
        drawn = [source.indices(split, index, 1) for index in range(num_tasks)]
        arrays = {name: torch.cat([getattr(d, name) for d in drawn]) for name in EPISODE_ARRAYS}
        images = source.images[split]
        names = tuple(
            tuple(images.class_names[c] for c in row) for row in arrays["classes"].tolist()
        )
        image_shape = tuple(images.images.shape[2:])
    else:
        drawn = [source.sample(split, index, 1).tensors() for index in range(num_tasks)]
        arrays = {
            name: torch.cat(parts).cpu()
            for name, parts in zip(TENSOR_ARRAYS, zip(*drawn, strict=True), strict=True)
        }
        names = image_shape = None
    metadata = _metadata(config, source, num_tasks)
    return TaskSet(config.task.dataset, split, image_shape, names, arrays, metadata)


def export_tasks(
    config: Config,
    split: str,
    num_tasks: int,
    path: str | Path,
    *,
    images: Mapping[str, ClassImages] | None = None,
) -> TaskSet:
    """Write tasks 0..num_tasks−1 of `split` as `metagrad eval` draws them for `config` to
    `path` (see the module docstring); `images`: the classes given from Python (see `fit`)."""
    if config.is_rl:
        raise ConfigError(
            f"task.dataset = {config.task.dataset} is a meta-RL environment, whose evaluation "
            "draws environments, not a fixed set of examples; export tasks of a supervised dataset"
        )
    if split not in EVALUATION_SPLITS:
        raise ConfigError(f"split {split!r} is not an evaluation split; use val or test")
    if num_tasks < 1:
        raise ConfigError(f"{num_tasks} tasks asked; export at least 1")
    _refuse_existing(Path(path))
    tasks = draw_tasks(
        config, build_tasks(config, evaluation=True, images=images), split, num_tasks
    )
    _save(tasks, Path(path))
    return dataclasses.replace(tasks, path=Path(path))


def load_tasks(path: str | Path) -> TaskSet:
    """Read a task file written by `export_tasks`, refusing one whose content does not hash to
    the hash it states (changed or damaged)."""
    path = Path(path)
    export_again = "export the tasks again (`metagrad tasks export`)"
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(
            f"task file {path} cannot be read: {err.strerror or err}; give a file written by "
            "`metagrad tasks export`"
        ) from err
    try:
        saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:
        raise DatasetError(
            f"{path} is not a metagrad task file ({type(err).__name__}); give a file written by "
            "`metagrad tasks export`"
        ) from err
    found = saved.get("format") if isinstance(saved, dict) else None
    if found != FORMAT:
        raise DatasetError(
            f"{path} is not a metagrad task file (format {found!r}, not {FORMAT!r}); give a file "
            "written by `metagrad tasks export`"
        )
    try:
        tasks = _from_saved(saved, path)
    except (KeyError, TypeError, ValueError) as err:
        detail = f"it has no {err}" if isinstance(err, KeyError) else err
        raise DatasetError(f"task file {path} is damaged ({detail}); {export_again}") from err
    if tasks.sha256 != saved["sha256"]:
        raise DatasetError(
            f"task file {path} was changed or damaged: its content hashes to "
            f"{tasks.sha256[:16]}…, not to the {str(saved['sha256'])[:16]}… it states; use the "
            f"file as it was exported, or {export_again}"
        )
    problem = _inconsistency(tasks)
    if problem:
        raise DatasetError(f"task file {path} is inconsistent: {problem}; {export_again}")
    return tasks


def _from_saved(saved: dict[str, Any], path: Path) -> TaskSet:
    """The `TaskSet` of a loaded file; `TypeError`/`ValueError` where a part is malformed."""
    names = saved["class_names"]
    expected = TENSOR_ARRAYS if names is None else EPISODE_ARRAYS
    arrays = saved["arrays"]
    if not isinstance(arrays, dict) or set(arrays) != set(expected):
        raise ValueError(f"its arrays are not {', '.join(expected)}")
    if not all(isinstance(tensor, torch.Tensor) for tensor in arrays.values()):
        raise TypeError("an array is not a tensor")
    if names is not None and not all(isinstance(n, str) for row in names for n in row):
        raise TypeError("a class name is not a string")
    if not isinstance(saved["sha256"], str):
        raise TypeError("its hash is not a string")
    shape = saved["image_shape"]
    return TaskSet(
        dataset=str(saved["dataset"]),
        split=str(saved["split"]),
        image_shape=None if shape is None else tuple(int(s) for s in shape),
        class_names=None if names is None else tuple(tuple(row) for row in names),
        arrays={name: arrays[name] for name in expected},
        metadata=dict(saved.get("metadata") or {}),
        path=path,
    )


def _inconsistency(tasks: TaskSet) -> str | None:
    """What is wrong with the shapes of a file's arrays (one forged with a matching hash), or
    None."""
    if tasks.split not in EVALUATION_SPLITS:
        return f"split {tasks.split!r} is not val or test"
    arrays = tasks.arrays
    if tasks.class_names is None:
        if any(tensor.dim() < 2 for tensor in arrays.values()):
            return "its tensors are not [tasks, examples, ...]"
        sizes = {tensor.shape[0] for tensor in arrays.values()}
        return None if len(sizes) == 1 else "its four tensors have different numbers of tasks"
    if any(tensor.dtype != torch.int64 for tensor in arrays.values()):
        return "its indices are not int64"
    if arrays["classes"].dim() != 2 or arrays["support"].dim() != 3 or arrays["query"].dim() != 3:
        return "classes, support or query do not have 2, 3 and 3 dimensions"
    num_tasks, n = arrays["classes"].shape
    expected = {
        "support": (num_tasks, n, arrays["support"].shape[2]),
        "query": (num_tasks, n, arrays["query"].shape[2]),
    }
    for part in ("support", "query"):
        size = n * expected[part][2]
        expected |= {f"{part}_order": (num_tasks, size), f"y_{part}": (num_tasks, size)}
    wrong = [name for name, shape in expected.items() if tuple(arrays[name].shape) != shape]
    if wrong:
        return f"{', '.join(wrong)} do not fit {num_tasks} tasks of {n} classes"
    if len(tasks.class_names) != num_tasks or any(len(row) != n for row in tasks.class_names):
        return f"class_names is not {num_tasks} lists of {n} names"
    for part in ("support_order", "query_order"):
        order = arrays[part]
        if not torch.equal(order.sort(1).values, torch.arange(order.shape[1]).expand_as(order)):
            return f"a row of {part} is not an order of the task's examples"
    if (_examples(arrays) < 0).any():
        return "an example index is negative"
    return None


def _metadata(config: Config, source: TaskSource, num_tasks: int) -> dict[str, Any]:
    """What describes a task set beyond its episodes (not hashed): its shape, the metagrad
    version, and the config fields that define the tasks (task.*, but the machine's data_root;
    train.seed; the evaluation protocol's shape)."""
    from metagrad import __version__  # the package's own version, set after its imports

    task = {k: v for k, v in config.to_dict()["task"].items() if k != "data_root"}
    return {
        "num_tasks": num_tasks,
        "n_way": getattr(source, "n_way", None),
        "k_shot": source.k_shot,
        "n_query": source.n_query,
        "image_size": config.task.image_size if isinstance(source, EpisodeSampler) else None,
        "metagrad_version": __version__,
        "config": {
            "task": task,
            "train": {"seed": config.train.seed},
            "eval": {k: getattr(config.eval, k) for k in ("n_way", "k_shot", "n_query")},
        },
    }


def _save(tasks: TaskSet, path: Path) -> None:
    """Write the file whole or not at all (a temporary file renamed over `path`)."""
    content = {
        "format": FORMAT,
        "sha256": tasks.sha256,
        "dataset": tasks.dataset,
        "split": tasks.split,
        "image_shape": None if tasks.image_shape is None else list(tasks.image_shape),
        "class_names": None if tasks.class_names is None else [list(c) for c in tasks.class_names],
        "arrays": {name: tensor.contiguous() for name, tensor in tasks.arrays.items()},
        "metadata": tasks.metadata,
    }
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        temporary = Path(name)  # made here, so provably ours to remove
        with os.fdopen(handle, "wb") as stream:
            torch.save(content, stream)
        os.link(temporary, path)  # unlike a rename, never replaces a file that appeared meanwhile
    except FileExistsError:
        _refuse_existing(path)
    except OSError as err:
        raise DatasetError(
            f"could not write task file {path}: {err.strerror or err}; choose a writable place "
            "with free space"
        ) from err
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)


def _refuse_existing(path: Path) -> None:
    """A task file is written only where nothing is: an existing file is never replaced."""
    if path.exists() or path.is_symlink():
        raise ConfigError(
            f"{path} already exists and is not replaced; give another -o, or move that file "
            "away first"
        )


def _tasks(indices: EpisodeIndices, start: int, stop: int) -> EpisodeIndices:
    """Tasks `start`..`stop`−1 of `indices`."""
    return EpisodeIndices(*(getattr(indices, name)[start:stop] for name in EPISODE_ARRAYS))


def _examples(arrays: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Every support and query example index, flat."""
    return torch.cat([arrays["support"].flatten(), arrays["query"].flatten()])


def _shape(shape: tuple[int, ...] | None) -> str:
    return "×".join(map(str, shape)) if shape else "no"
