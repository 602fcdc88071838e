"""The meta-test protocol: adapt to fixed tasks, report metrics after every inner step.

Evaluation never mutates the meta-parameters: it adapts detached copies.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from metagrad.build import build_learner, build_tasks, objective_for, resolve_device
from metagrad.checkpoint import CHECKPOINT_DIR, CheckpointStore, load_checkpoint
from metagrad.config import BatchNormMode, Config, load_config
from metagrad.data.class_images import ClassImages
from metagrad.errors import CheckpointError, ConfigError
from metagrad.execution import MetaLearner, distributed, running
from metagrad.execution.network import Network, TaskLearner
from metagrad.execution.strategies import TaskFn, TaskOf, map_tasks_no_grad
from metagrad.models.batch_norm import TaskBatchNorm
from metagrad.models.functional import Params
from metagrad.rl.run import evaluate_policy
from metagrad.runs import check_writable, saved_config
from metagrad.tasks.batch import TaskBatch
from metagrad.tasks.frozen import draw_tasks, load_tasks


@dataclass(frozen=True)
class Summary:
    """Mean and 95% confidence half-width of each metric after 0, 1, …, S inner steps."""

    num_tasks: int
    mean: dict[str, list[float]]
    ci95: dict[str, list[float]]

    def to_dict(self) -> dict:
        return {"num_tasks": self.num_tasks, "mean": self.mean, "ci95": self.ci95}


def adapted_metrics(
    learner: MetaLearner | Sequence[MetaLearner],
    batches: Iterable[TaskBatch],
    *,
    steps: int,
    lr: float | None = None,
    batch_norm: BatchNormMode = "transductive",
) -> dict[str, torch.Tensor]:
    """Query metrics of every task after 0..`steps` inner steps, `[num_tasks, steps + 1]` each.

    The algorithm adapts as it does at test time (`adapt_for_test`, inner lr `lr` or its own),
    and the tasks are mapped as the learner's execution plan says. Batch norm (`batch_norm`):
    `transductive` normalises the whole query set as one batch, as in MAML; `inductive`
    predicts each query example in a batch made of the support set and that example alone, so
    no query example sees another's batch statistics (the Reptile paper's protocol); `running`
    normalises with the running statistics of meta-training, as PyTorch's evaluation mode does.

    Several learners (the same run's checkpoints) are an ensemble: each adapts on its own,
    and their query outputs after each step are combined (`Objective.ensemble`: the mean
    probability for classification) before the metrics are taken.
    """
    members = [learner] if isinstance(learner, MetaLearner) else list(learner)
    objective = members[0].network.objective
    if len(members) == 1:
        score = _task_metrics(members[0], objective.metrics, steps, lr, batch_norm)
        per_batch = [_map(members[0], score, batch) for batch in batches]
    else:
        combine = objective.ensemble or (lambda outputs: outputs.mean(0))
        per_task_and_step = torch.func.vmap(torch.func.vmap(objective.metrics))
        tasks = [_task_metrics(m, _outputs, steps, lr, batch_norm) for m in members]
        per_batch = []
        for batch in batches:
            outputs = [
                _map(m, task, batch)["outputs"] for m, task in zip(members, tasks, strict=True)
            ]
            combined = combine(torch.stack(outputs))  # [tasks, steps + 1, n_query, ...]
            targets = batch.y_query[:, None].expand(-1, steps + 1, *batch.y_query.shape[1:])
            per_batch.append(per_task_and_step(combined, targets))
    return {k: torch.cat([b[k] for b in per_batch]) for k in per_batch[0]}


def _outputs(outputs: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"outputs": outputs}


def _map(
    learner: MetaLearner, evaluated: tuple[Network, TaskOf], batch: TaskBatch
) -> dict[str, torch.Tensor]:
    network, task = evaluated
    return map_tasks_no_grad(task, network, batch, strategy=learner.plan.evaluation)


def _task_metrics(
    learner: MetaLearner,
    score: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
    steps: int,
    lr: float | None,
    batch_norm: BatchNormMode,
) -> tuple[Network, TaskOf]:
    """The network as evaluation runs it (with its running statistics, for `running`), and one
    task's `score(query outputs, query targets)` after 0..`steps` test-time steps, for the
    learner the execution plan runs it with."""
    meta = learner.meta.detached()
    algorithm = learner.algorithm
    evaluated = learner.network
    if batch_norm == "running":
        evaluated = evaluated.with_running_statistics()
    vectorisable = evaluated.task_learner()
    inductive = batch_norm == "inductive"

    def predictor(network, x_support, y_support, x_query) -> Callable[[Params], torch.Tensor]:
        if not inductive:
            return algorithm.predictor(network, meta, x_support, y_support, x_query)
        support = x_support.expand(x_query.shape[0], *x_support.shape)
        batches = torch.cat([support, x_query[:, None]], dim=1)

        def each(fast: Params, batch: torch.Tensor) -> torch.Tensor:
            return algorithm.predictor(vectorisable, meta, x_support, y_support, batch)(fast)[-1]

        return lambda fast: torch.func.vmap(each, in_dims=(None, 0))(fast, batches)

    def task_of(network: TaskLearner) -> TaskFn:
        def task(x_support, y_support, x_query, y_query) -> dict[str, torch.Tensor]:
            predict = predictor(network, x_support, y_support, x_query)

            def observe(fast: Params) -> dict[str, torch.Tensor]:
                return score(predict(fast), y_query)

            return algorithm.adapt_for_test(
                network, meta, x_support, y_support, steps=steps, lr=lr, observe=observe
            ).observations

        return task

    return evaluated, task_of


def protocol_metrics(
    config: Config, learner: MetaLearner | Sequence[MetaLearner], batches: list[TaskBatch]
) -> dict[str, torch.Tensor]:
    """`adapted_metrics` with the run's test-time protocol (`config.eval`): validation and test.
    Under `torchrun`, each process evaluates its contiguous share of `batches` and every process
    gets the metrics of all tasks, in order: the same numbers as one process."""
    world = distributed.world()
    mine = batches[world.shard(len(batches))]
    metrics = None
    if mine:
        metrics = adapted_metrics(
            learner,
            mine,
            steps=config.eval.inner_steps,
            lr=config.eval.inner_lr,
            batch_norm=config.eval.batch_norm,
        )
    return world.concat(metrics)


def fixed_batches(tasks, split: str, num_tasks: int, batch_size: int) -> list[TaskBatch]:
    """Tasks 0..num_tasks−1 of `split`, in meta-batches of `batch_size`.

    Task i is drawn on its own (index i, one task), so the set does not depend on `batch_size`.
    """
    singles = [tasks.sample(split, index, 1) for index in range(num_tasks)]
    return [
        TaskBatch(*(torch.cat(parts) for parts in zip(*(t.tensors() for t in group), strict=True)))
        for group in (singles[i : i + batch_size] for i in range(0, num_tasks, batch_size))
    ]


def summarize(metrics: dict[str, torch.Tensor]) -> Summary:
    """Mean ± 1.96·standard error over tasks (the normal interval papers report)."""
    num_tasks = next(iter(metrics.values())).shape[0]
    mean, ci95 = {}, {}
    for name, values in metrics.items():
        values = values.double().cpu()
        mean[name] = values.mean(0).tolist()
        std = values.std(0) if num_tasks > 1 else torch.zeros_like(values[0])
        ci95[name] = (1.96 * std / math.sqrt(num_tasks)).tolist()
    return Summary(num_tasks, mean, ci95)


def format_summary(result: dict) -> str:
    """A plain-text table of an `evaluate_run` result: a row per inner step, `mean ± ci95`."""
    if "episodes" in result:
        return _format_returns(result)
    names = list(result["mean"])
    step = result["step"]
    which = (
        f"an ensemble of the {len(step)} best validation checkpoints (steps "
        f"{', '.join(map(str, step))})"
        if isinstance(step, list)
        else f"{result['checkpoint']} checkpoint at step {step}"
    )
    rows = [
        f"{result['run']}: {result['split']} tasks ({result['num_tasks']}), "
        f"{result['k_shot']}-shot, {which}, "
        f"inner lr {result['inner_lr']}, {result['n_query']} query per task"
        f"{' (per class)' if 'accuracy' in result['mean'] else ''}"
        + (f", batch norm: {result['batch_norm']}" if result["batch_norm"] else "")
        + _task_set(result)
        + "; mean ± 95% CI",
        "step  " + "  ".join(f"{n:>21}" for n in names),
    ]
    for step in range(len(result["mean"][names[0]])):
        cells = [
            f"{result['mean'][n][step]:>11.4f} ± {result['ci95'][n][step]:<7.4f}" for n in names
        ]
        rows.append(f"{step:>4}  " + "  ".join(cells))
    return "\n".join(rows)


def _task_set(result: dict) -> str:
    """`; task set 1a2b3c4d (from tasks.pt)`: which tasks, by the first digits of their hash."""
    if not result.get("tasks_sha256"):
        return ""
    source = f" (from {result['tasks_file']})" if result.get("tasks_file") else ""
    return f"; task set {result['tasks_sha256'][:8]}{source}"


def _format_returns(result: dict) -> str:
    """A meta-RL evaluation: the return of the run's policy and of the random initial policy
    after each policy-gradient step."""
    first, after = result["inner_lr"]
    rows = [
        f"{result['run']}: {result['split']} tasks ({result['num_tasks']}), "
        f"{result['checkpoint']} checkpoint at iteration {result['step']}, "
        f"{result['episodes']} episodes per task and step, step size {first} then {after}; "
        "average return, mean ± 95% CI",
        "step  " + "  ".join(f"{n:>21}" for n in ("run's policy", "random initial policy")),
    ]
    for step in range(len(result["mean"]["return"])):
        cells = [
            f"{result['mean'][n][step]:>11.2f} ± {result['ci95'][n][step]:<7.2f}"
            for n in ("return", "random_init_return")
        ]
        rows.append(f"{step:>4}  " + "  ".join(cells))
    return "\n".join(rows)


def evaluate_run(
    run_dir: str | Path,
    *,
    checkpoint: str = "best",
    split: str | None = None,
    overrides: Sequence[str] = (),
    images: Mapping[str, ClassImages] | None = None,
    ensemble: int = 1,
    tasks: str | Path | None = None,
) -> dict:
    """Evaluate a trained run on fixed tasks of `split` (default: test), tasks 0..
    `eval.num_tasks`−1, or on the tasks of the file `tasks` (`metagrad tasks export`; its split
    the default), refused unless intact and tasks of this run. Writes the result to a new file
    `<run>/eval-<split>-<checkpoint>-<K>shot-<S>steps[-tasks<hash>][-<n>].json` (its path is
    `saved_to`), with the content hash of the tasks (`tasks_sha256`, as `metagrad tasks export`
    states it; `-tasks<hash>`: its first 8 digits, when read from a file).
    `images`: the classes the run was given from Python (see `fit`). `ensemble` > 1 evaluates
    the run's `ensemble` best validation checkpoints together instead of `checkpoint` (the run
    must have kept them: `train.keep_best`)."""
    run_dir = Path(run_dir)
    _check_run_folder(run_dir)
    config = load_config(run_dir / "config.yaml", overrides)
    if config.is_rl:
        if ensemble > 1:
            raise ConfigError(
                "--ensemble is for supervised runs; a meta-RL run has one best policy"
            )
        if tasks is not None:
            raise ConfigError(
                "--tasks is for supervised runs: a meta-RL run is evaluated on environments "
                "its evaluation draws, not on a task file; leave --tasks out"
            )
        return _evaluate_policy_run(run_dir, config, checkpoint, split or "test")
    task_file = load_tasks(tasks) if tasks is not None else None
    if task_file is not None and split not in (None, task_file.split):
        raise ConfigError(
            f"task file {tasks} holds {task_file.split} tasks, but the {split} split was asked; "
            "leave --split out to evaluate on the file's tasks"
        )
    split = task_file.split if task_file is not None else split or "test"
    device = distributed.local_device(resolve_device(config.train.device))
    world = distributed.init_world(device)  # under torchrun, the tasks are shared out
    if ensemble > 1:
        states = best_checkpoints(run_dir, config, ensemble, device)
        checkpoint = f"ensemble{ensemble}"
    else:
        states = [read_checkpoint(run_dir, checkpoint, device)]
    learners = [load_learner(config, state, device, images) for state in states]
    learner, state = learners[0], states[0]
    source = build_tasks(config, device, evaluation=True, images=images)
    task_set = (
        task_file
        if task_file is not None
        else draw_tasks(config, source, split, config.eval.num_tasks)
    )
    batches = task_set.batches(config, source, config.eval.batch_size)
    metrics = protocol_metrics(config, learners, [b.to(device) for b in batches])
    result = {
        "run": config.name,
        "split": split,
        "checkpoint": checkpoint,
        "step": state["step"] if ensemble == 1 else [s["step"] for s in states],
        "inner_lr": config.eval.inner_lr or config.algorithm.inner_lr,
        "inner_steps": config.eval.inner_steps,
        "k_shot": config.eval.k_shot or config.task.k_shot,
        "n_query": config.eval.n_query,
        "batch_norm": batch_norm_mode(learner.model, config.eval.batch_norm),
        "tasks_sha256": task_set.sha256,
        "tasks_file": None if tasks is None else str(tasks),
        **summarize(metrics).to_dict(),
    }
    stem = result_stem(*(result[k] for k in ("split", "checkpoint", "k_shot", "inner_steps")))
    if task_file is not None:
        stem += f"-tasks{task_set.sha256[:8]}"
    path = world.on_main(lambda: _write_new(run_dir, result, stem))
    return {**result, "saved_to": str(path)}


def _evaluate_policy_run(run_dir: Path, config: Config, checkpoint: str, split: str) -> dict:
    """A meta-RL run: the return after each policy-gradient step (`metagrad.rl.run`); under
    torchrun the test tasks are shared out (rollouts on CPUs)."""
    world = distributed.init_world(torch.device("cpu"))
    state = read_checkpoint(run_dir, checkpoint)
    result = {
        "run": config.name,
        "split": split,
        "checkpoint": checkpoint,
        "step": state["step"],
        **evaluate_policy(config, state["params"], split),
    }
    which = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(checkpoint).stem)
    stem = f"eval-{split}-{which}-{result['episodes']}episodes-{result['inner_steps']}steps"
    path = world.on_main(lambda: _write_new(run_dir, result, stem))
    return {**result, "saved_to": str(path)}


def best_checkpoints(
    run_dir: Path, config: Config, count: int, device: torch.device | str
) -> list[dict]:
    """The run's `count` best validation checkpoints (`top`), best first; a damaged one is left
    out with a warning."""
    store = CheckpointStore(run_dir / CHECKPOINT_DIR)
    states = []
    for path in store.paths("top"):
        try:
            states.append(load_checkpoint(path, device))
        except CheckpointError as err:
            warnings.warn(f"{err}; left out of the ensemble", stacklevel=2)
    if len(states) < count:
        raise CheckpointError(
            f"an ensemble of {count} needs the run's {count} best validation checkpoints, but "
            f"{run_dir} holds {len(states)} intact (train.keep_best = {config.train.keep_best}); "
            f"train with train.keep_best >= {count}, or ask for a smaller ensemble"
        )
    higher_is_better = objective_for(config).higher_is_better
    value = {entry["step"]: entry["value"] for s in states for entry in s["top"]}
    states.sort(key=lambda s: ((-1 if higher_is_better else 1) * value[s["step"]], s["step"]))
    return states[:count]


def _check_run_folder(run_dir: Path) -> None:
    """A run folder to read, where the result can be written: checked before any compute."""
    saved_config(run_dir)
    check_writable(run_dir)


def result_stem(split: str, checkpoint: str, k_shot: int, inner_steps: int) -> str:
    """`eval-test-best-5shot-10steps`: what was evaluated, as a file name."""
    which = Path(checkpoint).stem if checkpoint.endswith(".pt") else checkpoint
    which = re.sub(r"[^A-Za-z0-9_.-]", "_", which)
    return f"eval-{split}-{which}-{k_shot}shot-{inner_steps}steps"


def _write_new(run_dir: Path, result: dict, stem: str) -> Path:
    """Write `result` as `<stem>.json`, or, if that exists, `<stem>-2.json`, … (never over
    another result)."""
    number = 1
    while True:
        path = run_dir / (f"{stem}.json" if number == 1 else f"{stem}-{number}.json")
        try:
            with path.open("x") as stream:
                stream.write(json.dumps(result, indent=2))
            return path
        except FileExistsError:
            number += 1
        except OSError as err:
            path.unlink(missing_ok=True)
            raise CheckpointError(
                f"could not save the evaluation as {path}: {err.strerror or err}; free disk space "
                "or make the run folder writable, then evaluate again"
            ) from err


def read_checkpoint(run_dir: Path, which: str, device: torch.device | str = "cpu") -> dict:
    """`which`: best, last, time-<seconds>s, or the path of a checkpoint file."""
    if which.endswith(".pt"):
        return load_checkpoint(Path(which), device)
    return CheckpointStore(run_dir / CHECKPOINT_DIR).load(which, device)


def batch_norm_mode(model: torch.nn.Module, mode: str) -> str | None:
    """How the network normalised the query set, stated with every evaluation."""
    if not any(isinstance(m, TaskBatchNorm) for m in model.modules()):
        return None
    if mode == "inductive":
        return "inductive: each query example normalised with the support set alone"
    if mode == "running" and running.per_step_copies(model):
        return "running: the per-step running statistics of meta-training, row k after k steps"
    if mode == "running":
        return "running: the running statistics of meta-training (PyTorch's evaluation mode)"
    return "transductive: task batch statistics, the query set normalised as one batch"


def load_learner(
    config: Config,
    state: dict,
    device: torch.device | str,
    images: Mapping[str, ClassImages] | None = None,
) -> MetaLearner:
    """The run's learner with the checkpoint's meta-parameters and execution plan."""
    learner = build_learner(config, device, images)
    learner.load_state_dict(state)
    return learner
