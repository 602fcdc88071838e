"""The run configuration: a frozen, typed dataclass tree read from YAML presets.

Every field is documented where it is declared. Unknown keys, wrong types and out-of-range values
raise `ConfigError` naming the field, the value, the rule and the fix, before any compute.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from metagrad.errors import ConfigError

BatchNormMode = Literal["transductive", "inductive", "running"]
"""How evaluation normalises batch norm (`EvalConfig.batch_norm`)."""


@dataclass(frozen=True)
class TaskConfig:
    """The task distribution: which problem, and the shape of one task."""

    dataset: Literal[
        "sinusoid",
        "omniglot",
        "miniimagenet",
        "tieredimagenet",
        "cifarfs",
        "fc100",
        "folder",
        "navigation2d",
        "halfcheetah-dir",
        "halfcheetah-vel",
        "ant-dir",
        "ant-vel",
    ] = "sinusoid"
    """Where tasks come from: sinusoid regression, Omniglot (grey), the RGB natural-image
    datasets mini-ImageNet, tiered-ImageNet, CIFAR-FS and FC100 (see `metagrad.data`), a
    folder of your own images, one subfolder per class, in task.data_root; or a reinforcement
    learning environment (settings in the `rl` section): 2D navigation, HalfCheetah or Ant
    forward/backward or velocity (the `[rl]` extra)."""
    n_way: int = 5
    """Classes per task (classification only)."""
    k_shot: int = 5
    """Support examples per task (per class for classification): what the inner loop sees."""
    n_query: int = 5
    """Query examples per task (per class) in meta-training: what the outer loss sees."""
    class_split: str = "maml"
    """Named class split of Omniglot: maml = 1100/100/423, vinyals = 1028/172/423, lake =
    964/0/659 (Lake et al. 2015: the background set for training, the evaluation set for test;
    no validation classes, so train with train.val_tasks = 0). The natural-image datasets have
    one standard split each and ignore it: mini-ImageNet 64/16/20 (Ravi & Larochelle),
    tiered-ImageNet 351/97/160, CIFAR-FS 64/16/20, FC100 60/20/20."""
    rotations: tuple[str, ...] = ("train", "val", "test")
    """Splits whose classes get rotated copies (90°, 180°, 270°) as extra classes; Omniglot
    only (set [] for the natural-image datasets)."""
    episodes: Literal["any", "within_alphabet"] = "any"
    """How validation and test tasks are drawn: any = classes and examples at random from the
    whole split; within_alphabet (Omniglot only) = Lake et al.'s one-shot tasks: every class of
    a task from one alphabet (drawn per task among those with at least n_way classes), support
    and query drawn by different people, the same K support and Q query drawers for every
    class. Training tasks are always `any`: they draw on every training class."""
    image_size: int = 28
    data_root: str | None = None
    """Dataset folder; null = $METAGRAD_DATA, else ~/.cache/metagrad (folder: required)."""
    folder_split: Literal["auto", "seeded", "folders"] = "auto"
    """folder: `seeded` splits the classes of data_root/<class>/ by split_fractions (a fixed
    rule of the class names); `folders` reads data_root/train/, val/ and test/; `auto` takes
    the folders when data_root holds exactly those three."""
    split_fractions: tuple[float, ...] = (0.64, 0.16, 0.2)
    """folder, seeded split: the fractions of the classes for train, val and test."""
    channels: int | None = None
    """folder: 1 (grey) or 3 (RGB) channels; null = RGB if any image has colour."""


BUILT_IN_MODELS = ("mlp", "conv4", "resnet12")
BUILT_IN_ALGORITHMS = (
    "maml",
    "reptile",
    "pretrain",
    "anil",
    "boil",
    "metasgd",
    "mamlpp",
    "protonets",
    "baseline",
    "baselinepp",
)
FIRST_ORDER_ALGORITHMS = ("maml", "anil", "boil", "metasgd", "mamlpp")
CLASSIFIERS = ("protonets", "baseline", "baselinepp")
"""The built-in algorithms that classify with something other than the network's head."""
"""The built-in algorithms with a second-order inner loop that `algorithm.first_order` detaches."""


@dataclass(frozen=True)
class ModelConfig:
    """The network whose initialisation is meta-learned."""

    name: str = "mlp"
    """mlp, conv4, resnet12 (64-160-320-640 channels), or a network of your own:
    `package.module:function` (a function or class returning an nn.Module; it is given
    num_classes, in_channels and image_size if it takes them, and model.kwargs)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of a network of your own (model.name = package.module:function)."""
    hidden: tuple[int, ...] = (40, 40)
    """mlp: hidden layer widths (ReLU between layers); conv4: one entry, the filters per layer;
    resnet12: the four blocks' channels."""
    pool: Literal["stride", "max"] = "stride"
    """conv4: stride-2 convolutions (Omniglot) or 2×2 max-pooling (84×84 images)."""


@dataclass(frozen=True)
class AlgorithmConfig:
    """The meta-gradient rule and the inner loop it stands on."""

    name: str = "maml"
    """maml (first_order selects FOMAML), reptile, pretrain (joint training, no inner loop), anil
    (the inner loop adapts the head only), boil (the body only), metasgd (a learned inner
    learning rate per parameter entry), mamlpp (MAML++: learned per-layer per-step rates,
    multi-step loss, derivative-order annealing, per-step batch-norm weights, each switchable by
    algorithm.kwargs), protonets (Prototypical Networks: no inner loop, no head), baseline and
    baselinepp (Baseline / Baseline++: a linear or cosine classifier over all training classes,
    a new one fitted to each test task's support set); see docs/algorithms.md. Or an algorithm
    of your own:
    `package.module:Class`, a subclass of metagrad.algorithms.Algorithm (given inner_steps,
    inner_lr, inner_optimizer and algorithm.kwargs)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Further keyword arguments of the algorithm: anil and boil take `head`, the name prefix of
    the head's parameters (default `head.`); mamlpp takes lslr, msl, msl_steps,
    first_order_steps and per_step_bn (docs/algorithms.md); an algorithm of your own, its own."""
    first_order: bool = False
    """maml, anil, boil, metasgd, mamlpp: detach the inner gradients (first-order MAML)."""
    inner_steps: int = 1
    """Gradient steps of the inner loop during meta-training (alpha steps)."""
    inner_lr: float = 0.01
    """Inner learning rate (alpha)."""
    inner_optimizer: Literal["sgd", "adam"] = "sgd"
    """sgd, or adam with beta1 = 0 as in the Reptile paper."""


@dataclass(frozen=True)
class TrainConfig:
    """The outer loop."""

    meta_batch_size: int = 25
    """Tasks per outer step."""
    iterations: int = 70_000
    """Outer steps."""
    outer_optimizer: Literal["adam", "sgd"] = "adam"
    outer_lr: float = 1e-3
    """Outer learning rate (beta); for Reptile with sgd this is the step size epsilon."""
    outer_lr_decay: Literal["none", "linear", "cosine"] = "none"
    """linear: anneal the outer learning rate to 0 over the run (Reptile); cosine: from outer_lr
    to outer_lr_min along half a cosine over the run (MAML++)."""
    outer_lr_min: float = 0.0
    """cosine: the outer learning rate at the end of the run."""
    strategy: Literal["auto", "vmap", "loop", "hybrid", "batched"] = "auto"
    """How the tasks of a meta-batch are executed; all give the same meta-gradient. auto times
    each on the first meta-batch and keeps the fastest; loop runs tasks one by one; vmap
    vectorises them; hybrid vectorises the inner loop and loops over the query losses; batched
    runs the network's own task-batched forward (grouped convolutions, batched products)."""
    chunk_size: int | None = None
    """vmap, hybrid, batched: tasks processed at once (bounds memory); null = the whole meta-batch.
    loop holds one task's graph at a time whatever its value."""
    seed: int = 0
    """Seeds the initialisation and the task stream."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""
    log_every: int = 100
    val_every: int = 2_000
    """Evaluate on fixed validation tasks every this many steps; the best is kept."""
    val_tasks: int = 200
    """Fixed validation tasks. 0 = no validation (a split without validation classes, such as
    Omniglot's lake): every val_every steps the current parameters are saved as `best`, so the
    best checkpoint is the last."""
    ckpt_every: int = 2_000
    time_budget: float | None = None
    """Stop after this many seconds of training (validation not counted); null = no limit."""
    snapshot_seconds: tuple[float, ...] = ()
    """Also keep a checkpoint `time-<s>s` when training time first passes each of these."""
    keep_checkpoints: int = 3
    """Periodic checkpoints kept (the newest); the best-on-validation one is kept as well."""
    keep_best: int = 1
    """Validation checkpoints kept: the best, or the `keep_best` best (as `top` checkpoints),
    which `metagrad eval --ensemble K` evaluates together (MAML++ reports an ensemble of 5)."""
    max_memory: str | None = None
    """Memory budget of the process (CPU) or of CUDA tensors (GPU), e.g. 8GiB: the strategy,
    chunk_size and checkpoint_inner that fit and run fastest are measured and chosen at the
    start. null = no budget."""
    checkpoint_inner: bool = False
    """Recompute each inner step during the backward pass instead of storing its activations:
    same meta-gradient, less memory, about one more inner loop of compute (loop and batched
    strategies)."""
    precision: Literal["float32", "bf16"] = "float32"
    """The forward passes of meta-training: float32, or bfloat16 under `torch.autocast` (faster
    on GPUs with bfloat16 units; parameters, meta-gradients and the outer optimizer stay
    float32, and validation and test run in float32)."""
    nonfinite: Literal["error", "skip"] = "error"
    """A NaN/Inf loss or gradient: stop with an error, or skip the step (see max_skips)."""
    max_skips: int = 10
    """With nonfinite = skip: stop anyway after this many consecutive skipped steps."""


@dataclass(frozen=True)
class EvalConfig:
    """The meta-test protocol."""

    num_tasks: int = 600
    """Fixed test tasks; results are mean and 95% confidence interval over them."""
    inner_steps: int = 10
    """Evaluate after every inner step 0..inner_steps."""
    inner_lr: float | None = None
    """Inner learning rate at test time; null = the training one."""
    n_way: int | None = None
    """Classes per test task; null = task.n_way. Only for algorithms without a classification
    head (protonets, baseline, baselinepp), which may train on more ways than they are tested
    on."""
    k_shot: int | None = None
    """Support examples per test task (per class); null = task.k_shot. Reptile trains on more
    shots than it is tested on."""
    n_query: int = 100
    """Query examples per test task (per class)."""
    batch_size: int = 100
    """Test tasks adapted at once."""
    batch_norm: BatchNormMode = "transductive"
    """transductive: the query set is one batch (the MAML reference); inductive: each query
    example is normalised in a batch with the support set alone (Reptile's protocol); running:
    the running statistics that meta-training kept (PyTorch's evaluation mode; a model whose
    batch norm keeps them, such as a user's `nn.BatchNorm2d`)."""


RL_ENVIRONMENTS = ("navigation2d", "halfcheetah-dir", "halfcheetah-vel", "ant-dir", "ant-vel")
"""The task.dataset values that are reinforcement-learning environments."""


@dataclass(frozen=True)
class RLConfig:
    """Meta-reinforcement learning (task.dataset = navigation2d, halfcheetah-dir,
    halfcheetah-vel, ant-dir or ant-vel): MAML with a policy-gradient inner loop and a TRPO
    outer step, a Gaussian MLP policy of model.hidden widths. train.meta_batch_size tasks per
    iteration; algorithm.inner_lr, inner_steps and first_order as for supervised MAML."""

    horizon: int | None = None
    """Steps per episode; null = the paper's (navigation 100, HalfCheetah and Ant 200)."""
    rollouts: int = 20
    """Episodes per task for each inner step and for the outer loss."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 1.0
    """GAE λ (1: Monte-Carlo returns minus the linear baseline)."""
    max_kl: float = 0.01
    """TRPO: the trust region, mean KL between the adapted policies before and after a step."""
    cg_iterations: int = 10
    """TRPO: conjugate-gradient iterations."""
    damping: float = 1e-5
    """TRPO: added to the Fisher matrix."""
    init_std: float = 1.0
    """Initial standard deviation of the policy's actions."""
    eval_rollouts: int = 40
    """Episodes per task and step in evaluation."""
    eval_lr_after: float = 0.05
    """Evaluation: the step size after the first step (the paper's test script halves it);
    eval.inner_lr, or algorithm.inner_lr, is the first step's."""
    vectorization: Literal["threads", "sync", "async"] = "threads"
    """HalfCheetah and Ant: the episodes stepped on MuJoCo directly by a pool of threads
    (threads), or by Gymnasium's vector environment in this process (sync) or in worker
    processes (async); the same episodes each way."""
    normalized_actions: bool = False
    """2D navigation: the policy acts in [−1, 1]², scaled to ±0.1 (rllab's `normalize`, as the
    original MAML code); false: the raw action is clipped to ±0.1 (pytorch-maml-rl)."""
    outer: Literal["trpo", "ppo"] = "trpo"
    """The outer step: TRPO (the MAML paper) or PPO-clip (ProMP, Rothfuss et al. 2019)."""
    ppo_clip: float = 0.3
    """PPO: the clipping range ε of the ratio (ProMP's 0.3)."""
    ppo_epochs: int = 5
    """PPO: Adam steps on the same episodes per meta-iteration (ProMP's 5)."""
    ppo_lr: float = 1e-3
    """PPO: Adam's learning rate (ProMP's 10⁻³)."""
    inner_estimator: Literal["pg", "lvc"] = "pg"
    """The inner loss: the policy gradient's −log π·A (the MAML paper) or ProMP's
    low-variance-curvature −π/π_old·A (the same step, other second-order terms)."""
    inner_kl_penalty: float = 0.0
    """ProMP's η: the outer loss adds η · KL between the pre-update policies that sampled the
    support episodes and those at the new θ (0: off; ProMP's 5·10⁻⁴)."""


@dataclass(frozen=True)
class Config:
    """A whole run. Presets in `metagrad/configs/*.yaml` fill it; `--set a.b=c` overrides."""

    name: str = "run"
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    rl: RLConfig = field(default_factory=RLConfig)

    @property
    def is_rl(self) -> bool:
        """Whether the tasks are reinforcement-learning environments."""
        return self.task.dataset in RL_ENVIRONMENTS

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def fingerprint(self) -> str:
        """A short hash of the whole configuration, stored with every checkpoint."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"task": {"n_way": 5}}` → `{"task.n_way": 5}`: a config as its dotted keys."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def preset_names() -> list[str]:
    """Names of the built-in presets."""
    folder = resources.files("metagrad") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_config(source: str | Path, overrides: typing.Sequence[str] = ()) -> Config:
    """Build a validated `Config` from a preset name or a YAML file, then `key=value` overrides."""
    raw = _read_source(source)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"override {item!r} is not of the form key=value; write e.g. "
                "--set train.iterations=1000"
            )
        _set_path(raw, key.strip(), yaml.safe_load(text))
    return config_from_dict(raw)


def config_from_dict(raw: dict[str, Any]) -> Config:
    config = _build(Config, raw, "")
    validate(config)
    return config


def _read_source(source: str | Path) -> dict[str, Any]:
    path = Path(source)
    if not path.suffix:
        preset = resources.files("metagrad") / "configs" / f"{source}.yaml"
        if not preset.is_file():
            raise ConfigError(
                f"unknown preset {str(source)!r}{did_you_mean(str(source), preset_names())}; "
                f"choose one of: {', '.join(preset_names())}, or give the path of a YAML file"
            )
        text = preset.read_text()
    elif path.is_file():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError) as err:
            raise ConfigError(
                f"config file {str(path)!r} cannot be read as text ({err}); give a YAML file"
            ) from err
    else:
        raise ConfigError(f"config file {str(path)!r} does not exist; give a preset name or a path")
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config {str(source)!r} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"config {str(source)!r} must be a mapping of sections, not {raw!r}")
    return raw


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest choice to a mistyped word, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is a value, not a section")
    node[leaf] = value


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    not_names = [key for key in raw if not isinstance(key, str)]
    if not_names:
        raise ConfigError(
            f"config key {not_names[0]!r}{' in ' + where if where else ''} is not a name; "
            f"valid keys: {', '.join(sorted(names))}"
        )
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {_join(where, unknown[0])!r}"
            f"{did_you_mean(_join(where, unknown[0]), [_join(where, n) for n in names])}; "
            f"valid keys{' in ' + where if where else ''}: {', '.join(sorted(names))}"
        )
    values = {}
    for name, value in raw.items():
        path = _join(where, name)
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, path)
        else:
            values[name] = _coerce(value, hint, path)
    return cls(**values)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Check `value` against a field's type; accept what YAML writes for it (1e-3, [40, 40])."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, path)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(map(str, args))
            raise ConfigError(f"{path} = {value!r} is not allowed; choose one of: {choices}")
        return value
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{path} = {value!r} must be a mapping of names to values")
        return dict(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} = {value!r} must be a list, e.g. [40, 40]")
        return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{path} = {value!r} must be a finite number")
        return number
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (bool, str) and isinstance(value, hint):
        return value
    type_name = "a number" if hint is float else f"of type {getattr(hint, '__name__', hint)}"
    raise ConfigError(f"{path} = {value!r} must be {type_name}")


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kib": 2**10,
    "kb": 10**3,
    "m": 2**20,
    "mib": 2**20,
    "mb": 10**6,
    "g": 2**30,
    "gib": 2**30,
    "gb": 10**9,
    "t": 2**40,
    "tib": 2**40,
    "tb": 10**12,
}


def parse_size(text: str | int | float) -> int:
    """Bytes from `8GiB`, `8G` (= GiB), `8GB` (10⁹), `512MiB` or a plain number of bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ConfigError(
            f"{text!r} is not a memory size; write e.g. 8GiB, 8G, 512MiB or a number of bytes"
        )
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


MAX_SEED = 2**63 - 1
MAX_IMAGE_SIZE = 512
"""Larger images would take terabytes in memory at dataset scale (the presets use 28 to 84)."""


def validate(config: Config) -> None:
    """Range rules that types cannot express."""
    _validate_limits(config)
    positive = {
        "task.k_shot": config.task.k_shot,
        "task.n_query": config.task.n_query,
        "algorithm.inner_lr": config.algorithm.inner_lr,
        "train.meta_batch_size": config.train.meta_batch_size,
        "train.iterations": config.train.iterations,
        "train.outer_lr": config.train.outer_lr,
        "train.log_every": config.train.log_every,
        "train.val_every": config.train.val_every,
        "train.ckpt_every": config.train.ckpt_every,
        "train.keep_checkpoints": config.train.keep_checkpoints,
        "train.keep_best": config.train.keep_best,
        "train.max_skips": config.train.max_skips,
        "eval.num_tasks": config.eval.num_tasks,
        "eval.n_query": config.eval.n_query,
        "eval.batch_size": config.eval.batch_size,
    }
    if config.train.chunk_size is not None:
        positive["train.chunk_size"] = config.train.chunk_size
    if config.eval.k_shot is not None:
        positive["eval.k_shot"] = config.eval.k_shot
    if config.eval.n_way is not None:
        positive["eval.n_way"] = config.eval.n_way
    if config.eval.inner_lr is not None:
        positive["eval.inner_lr"] = config.eval.inner_lr
    if config.train.time_budget is not None:
        positive["train.time_budget"] = config.train.time_budget
    if config.train.max_memory is not None:
        try:
            positive["train.max_memory"] = parse_size(config.train.max_memory)
        except ConfigError as err:
            raise ConfigError(f"train.max_memory: {err}") from None
    positive["task.n_way"] = config.task.n_way
    positive["task.image_size"] = config.task.image_size
    positive.update({f"model.hidden[{i}]": h for i, h in enumerate(config.model.hidden)})
    for path, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{path} = {value!r} must be > 0")
    if not 0 <= config.train.outer_lr_min <= config.train.outer_lr:
        raise ConfigError(
            f"train.outer_lr_min = {config.train.outer_lr_min!r} must be between 0 and "
            f"train.outer_lr = {config.train.outer_lr!r}"
        )
    for path, value in {
        "algorithm.inner_steps": config.algorithm.inner_steps,
        "eval.inner_steps": config.eval.inner_steps,
        "train.val_tasks": config.train.val_tasks,
    }.items():
        if value < 0:
            raise ConfigError(f"{path} = {value!r} must be >= 0")
    if config.algorithm.name == "reptile" and config.algorithm.inner_steps < 1:
        raise ConfigError(
            "algorithm.inner_steps = 0 with algorithm.name = reptile gives a zero meta-gradient; "
            "set algorithm.inner_steps >= 1"
        )
    unknown_splits = sorted(set(config.task.rotations) - {"train", "val", "test"})
    if unknown_splits:
        raise ConfigError(
            f"task.rotations names {unknown_splits}; only train, val and test are splits"
        )
    if config.task.dataset not in ("sinusoid", "omniglot", "folder", *RL_ENVIRONMENTS) and (
        config.task.rotations
    ):
        raise ConfigError(
            f"task.rotations = {list(config.task.rotations)} but rotated copies as extra classes "
            f"are for Omniglot and image folders only; set task.rotations = [] for task.dataset = "
            f"{config.task.dataset}"
        )
    if config.task.episodes != "any" and config.task.dataset != "omniglot":
        raise ConfigError(
            f"task.episodes = {config.task.episodes} draws each task from one alphabet, and only "
            f"Omniglot's classes have alphabets; set task.episodes = any for task.dataset = "
            f"{config.task.dataset}"
        )
    if config.train.val_tasks == 0 and config.train.keep_best > 1:
        raise ConfigError(
            f"train.keep_best = {config.train.keep_best} keeps the best validation checkpoints, "
            "but train.val_tasks = 0 validates nothing; set train.keep_best = 1 (the last "
            "checkpoint is kept as the best), or validate on train.val_tasks > 0 tasks"
        )
    if config.train.checkpoint_inner and config.train.strategy in ("vmap", "hybrid"):
        raise ConfigError(
            f"train.checkpoint_inner = true cannot run under train.strategy = "
            f"{config.train.strategy} (vmap); use loop, batched or auto"
        )
    if config.algorithm.name not in BUILT_IN_ALGORITHMS and ":" not in config.algorithm.name:
        raise ConfigError(
            f"algorithm.name = {config.algorithm.name!r} is not allowed; choose one of: "
            f"{', '.join(BUILT_IN_ALGORITHMS)}, or name your own as package.module:Class"
        )
    if config.model.name not in BUILT_IN_MODELS and ":" not in config.model.name:
        raise ConfigError(
            f"model.name = {config.model.name!r} is not a network; choose one of "
            f"{', '.join(BUILT_IN_MODELS)}, or name your own as package.module:function"
        )
    if config.model.name == "resnet12" and len(config.model.hidden) != 4:
        raise ConfigError(
            f"model.hidden = {list(config.model.hidden)} for resnet12 must be four numbers, the "
            "channels of its blocks, e.g. [64, 160, 320, 640]"
        )
    if config.model.name == "conv4" and len(config.model.hidden) != 1:
        raise ConfigError(
            f"model.hidden = {list(config.model.hidden)} for conv4 must be one number, the "
            "filters per layer, e.g. [64]"
        )
    if config.algorithm.name in CLASSIFIERS and config.task.dataset == "sinusoid":
        raise ConfigError(
            f"algorithm.name = {config.algorithm.name} classifies, but task.dataset = sinusoid "
            "is regression; use maml, reptile, pretrain, anil, boil or metasgd"
        )
    if config.model.name == "conv4" and config.model.pool == "max" and config.task.image_size < 16:
        raise ConfigError(
            f"task.image_size = {config.task.image_size} is too small for conv4 with "
            "model.pool = max: its four 2×2 max-poolings need at least 16 pixels; use "
            "model.pool = stride, or images of 16 pixels or more"
        )
    if config.is_rl:
        _validate_rl(config)
    if config.algorithm.first_order and config.algorithm.name not in FIRST_ORDER_ALGORITHMS:
        raise ConfigError(
            f"algorithm.first_order = true only applies to {', '.join(FIRST_ORDER_ALGORITHMS)}, "
            f"not {config.algorithm.name!r}; remove it"
        )


NOT_FOR_RL = {
    "train": (
        "outer_optimizer",
        "outer_lr",
        "outer_lr_decay",
        "outer_lr_min",
        "strategy",
        "chunk_size",
        "max_memory",
        "checkpoint_inner",
        "precision",
        "keep_best",
        "snapshot_seconds",
        "nonfinite",
        "val_every",
        "val_tasks",
    ),
    "eval": ("n_way", "k_shot", "n_query", "batch_size", "batch_norm"),
}
"""Settings of supervised meta-learning that a meta-RL run would silently ignore."""


def _validate_rl(config: Config) -> None:
    rl = config.rl
    if config.algorithm.name not in ("maml", "pretrain") or config.model.name != "mlp":
        raise ConfigError(
            f"task.dataset = {config.task.dataset} is reinforcement learning, which metagrad "
            f"meta-trains with MAML (TRPO outer step) on an MLP policy, not algorithm.name = "
            f"{config.algorithm.name} with model.name = {config.model.name}; set "
            "algorithm.name = maml (or pretrain, the pre-trained baseline) and model.name = mlp"
        )
    if config.algorithm.inner_optimizer != "sgd":
        raise ConfigError(
            "algorithm.inner_optimizer must be sgd for reinforcement learning: the inner step "
            "is a vanilla policy-gradient step"
        )
    for section, names in NOT_FOR_RL.items():
        default = {"train": TrainConfig(), "eval": EvalConfig()}[section]
        for name in names:
            value = getattr(getattr(config, section), name)
            if value != getattr(default, name):
                raise ConfigError(
                    f"{section}.{name} = {value!r} does not apply to reinforcement learning "
                    "(a TRPO outer step on batched episodes; see the rl section); remove it"
                )
    positive = {
        "rl.rollouts": rl.rollouts,
        "rl.max_kl": rl.max_kl,
        "rl.cg_iterations": rl.cg_iterations,
        "rl.init_std": rl.init_std,
        "rl.eval_rollouts": rl.eval_rollouts,
        "rl.eval_lr_after": rl.eval_lr_after,
        "algorithm.inner_steps": config.algorithm.inner_steps,
    }
    if rl.horizon is not None:
        positive["rl.horizon"] = rl.horizon
    for path, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{path} = {value!r} must be > 0")
    for path, value in {"rl.gamma": rl.gamma, "rl.gae_lambda": rl.gae_lambda}.items():
        if not 0 <= value <= 1:
            raise ConfigError(f"{path} = {value!r} must be between 0 and 1")
    if rl.damping < 0:
        raise ConfigError(f"rl.damping = {rl.damping!r} must be >= 0")
    for path, value in {"rl.ppo_epochs": rl.ppo_epochs, "rl.ppo_lr": rl.ppo_lr}.items():
        if not value > 0:
            raise ConfigError(f"{path} = {value!r} must be > 0")
    if not 0 < rl.ppo_clip < 1:
        raise ConfigError(f"rl.ppo_clip = {rl.ppo_clip!r} must be between 0 and 1")
    if rl.inner_kl_penalty < 0:
        raise ConfigError(f"rl.inner_kl_penalty = {rl.inner_kl_penalty!r} must be >= 0")
    if rl.normalized_actions and config.task.dataset != "navigation2d":
        raise ConfigError(
            f"rl.normalized_actions is for navigation2d; {config.task.dataset}'s actions are "
            "already in [−1, 1]: remove it"
        )
    if config.algorithm.name == "pretrain" and (
        rl.outer != "trpo" or rl.inner_estimator != "pg" or rl.inner_kl_penalty
    ):
        raise ConfigError(
            "the pre-trained baseline (algorithm.name = pretrain) is trained by TRPO without an "
            "inner loop; remove rl.outer, rl.inner_estimator and rl.inner_kl_penalty"
        )


def _validate_limits(config: Config) -> None:
    """Values that pass the type and sign checks but could not be used: a name that is a path,
    seeds the generators refuse, images too large to hold, an MLP without hidden layers."""
    name = config.name
    if not re.fullmatch(r"[A-Za-z0-9_+=@,-][A-Za-z0-9_.+=@,-]*", name) or len(name) > 200:
        raise ConfigError(
            f"name = {name!r} must be a plain name (letters, digits, _ - . + = @ ,; not a path, "
            "not starting with a dot), e.g. maml-sinusoid-5shot; choose where the run goes "
            "with --run-dir"
        )
    if not 0 <= config.train.seed <= MAX_SEED:
        raise ConfigError(f"train.seed = {config.train.seed} must be between 0 and 2**63 - 1")
    if config.task.image_size > MAX_IMAGE_SIZE:
        raise ConfigError(
            f"task.image_size = {config.task.image_size} is above {MAX_IMAGE_SIZE} pixels: the "
            "images of a dataset would not fit in memory; use 28 (Omniglot), 32 or 84"
        )
    if config.model.name == "mlp" and not config.model.hidden:
        raise ConfigError(
            "model.hidden = [] leaves the mlp without hidden layers (a linear model); give at "
            "least one width, e.g. [40, 40]"
        )


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
