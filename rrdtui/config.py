"""Typed presets: YAML -> validated configuration, with `--set key.path=value` overrides.

Configuration flows one way: the defaults below, then the preset file, then the overrides. Every
problem becomes a ConfigError whose message is one line naming the file and the key, so the CLI and
the dashboard can show it as it is. This module imports neither torch nor any UI library.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rrdtui.catalog import ARCHS, DATASETS
from rrdtui.registry import method_info, method_names


class ConfigError(Exception):
    """A preset or override the user must fix; the message is one line naming file and key."""


@dataclass
class DataConfig:
    name: str = "synthetic"
    root: str | None = None  # where data sets live; default $RRDTUI_DATA or ./data
    download: bool = True  # try torchvision's download when files are missing
    num_classes: int = 10  # synthetic only
    train_size: int = 5000  # synthetic only
    val_size: int = 1000  # synthetic only
    data_seed: int = 0  # the synthetic data's seed, and the choice of the holdout, train_limit and probe images
    train_limit: int | None = None  # train on a fixed random subset of this many images (quick studies)
    holdout: int = 0  # hold out this many training images (stratified) to choose the best epoch on; 0 = off
    image_size: int = 32  # folder data sets and transfer probes
    val_split: float = 0.1  # imagefolder without a val/ folder
    probe_size: int = 256  # fixed validation images for the teacher-student similarity statistics
    workers: int = 4  # DataLoader workers for folder data sets


@dataclass
class TeacherConfig:
    arch: str | None = None
    checkpoint: str | None = None  # a .pth file: ours or the published {"model": state_dict}
    run: str | None = None  # a run id (or unique prefix) in the store
    preset: str | None = None  # a teacher preset; trained first when the store has no completed run
    expected_acc: float | None = None  # warn when the measured accuracy is more than 1 point lower


@dataclass
class StudentConfig:
    arch: str = "resnet8"  # the network this preset trains (a teacher, for method "none")
    init: str | None = None  # start from this checkpoint's weights (layers whose shapes match)
    freeze: bool = False  # train the final classifier only: a linear probe (transfer evaluation)


@dataclass
class MethodConfig:
    name: str = "rrd"
    gamma: float | None = None  # weight of cross-entropy; None = the method's default (RRD.md)
    alpha: float | None = None  # weight of KD
    beta: float | None = None  # weight of RRD or CRD
    kd_T: float = 4.0
    tau_s: float = 0.04  # student temperature (published 2024 code)
    tau_t: float = 0.1  # teacher temperature (published 2024 code)
    feat_dim: int = 128
    queue_size: int = 16384
    enqueue: str = "after"  # "after" (published) or "before" (2025 code): when the batch joins the queue
    train_teacher_head: bool = False  # the authors' code leaves the teacher head untrained
    crd_nce_t: float = 0.07
    crd_momentum: float = 0.5
    crd_negatives: int = 16384
    # With several processes: RRD's queue and CRD's memory take the keys of every process's share of
    # the batch (gathered in rank order, as MoCo's concat_all_gather), as one process would; false
    # keeps a queue per process, as the authors' ImageNet code does.
    gather: bool = True
    # Settings of the chosen method beyond those above, declared (with defaults) in its module's SPEC.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    lr_decay: float = 0.1
    # The linear scaling rule, opted into: optim.lr is the rate for a global batch of this many images
    # and the run trains at lr x train.batch_size / lr_base_batch. None: optim.lr as it is, whatever
    # the batch and the number of processes (nothing is ever scaled silently).
    lr_base_batch: int | None = None


@dataclass
class TrainConfig:
    epochs: int = 240
    batch_size: int = 64
    eval_batch_size: int = 512
    device: str = "auto"  # auto picks CUDA when present
    log_every: int = 50  # steps between train metric rows
    amp: str = "auto"  # bf16 autocast on CUDA when "auto"; "bf16" or "off" to force
    channels_last: bool = True  # CUDA and CPU (oneDNN convolutions also prefer it)
    compile: bool = False  # torch.compile the student's step
    # The frozen teacher's forward: fp32 (exact targets, even inside the student's bf16 autocast) or
    # bf16 (autocast, on CUDA and, emulated, on the CPU). README, "Precision and CUDA graphs".
    teacher_dtype: str = "fp32"
    cuda_graphs: bool = False  # capture the whole training step as a CUDA graph (rrdtui/train/graphs.py)
    # Several processes (README, "Several GPUs and several nodes"): torchrun starts train.nproc
    # processes on each of train.nnodes nodes, one GPU each on CUDA. train.batch_size stays the global
    # batch, split evenly across them, so the result does not depend on how many there are.
    nproc: int = 1  # processes on this node
    nnodes: int = 1  # nodes; more than one needs rdzv_endpoint
    rdzv_endpoint: str | None = None  # host:port of the c10d rendezvous that the nodes join
    sync_bn: bool = True  # BatchNorm statistics over the global batch (only acts with several processes)

    @property
    def world_size(self) -> int:
        """How many processes train the run."""
        return self.nproc * self.nnodes


@dataclass
class Config:
    name: str = "unnamed"
    description: str = ""
    seed: int = 0
    group: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # The paper's numbers for this teacher -> student pair (top-1 %), shown beside a run.
    paper: dict[str, float] | None = None

    @property
    def distills(self) -> bool:
        """True when the method needs a teacher."""
        return self.method.name != "none"

    @property
    def lr(self) -> float:
        """The learning rate the run trains at (before the milestones' decay)."""
        return effective_lr(self.optim.lr, self.train.batch_size, self.optim.lr_base_batch)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of what determines the trained weights: equal hashes mean a teacher can be reused."""
        return fingerprint(self.to_dict())


# Keys that do not change what a run learns: left out of fingerprints and reuse checks.
COSMETIC_KEYS = {
    "name", "description", "group", "paper", "train.device", "train.log_every", "train.eval_batch_size",
    "data.workers", "data.root",
    # How many processes train a run does not change what it learns (the global batch is the same;
    # tests/test_distributed.py): a teacher trained on 8 GPUs serves a student trained on one.
    "train.nproc", "train.nnodes", "train.rdzv_endpoint",
}  # fmt: skip


def effective_lr(lr: float, batch_size: int, base_batch: int | None) -> float:
    """optim.lr, scaled linearly to the global batch when optim.lr_base_batch opts into the rule."""
    return lr * batch_size / base_batch if base_batch else lr


def world_summary(config: dict[str, Any]) -> str:
    """A resolved configuration's processes, global batch and learning rate, in one line (for `show`
    and the dashboard): '2 processes (1 node x 2), global batch 64 (32 each), lr 0.05'."""
    train, optim = config.get("train") or {}, config.get("optim") or {}
    nproc, nnodes, batch = train.get("nproc", 1), train.get("nnodes", 1), train.get("batch_size", 64)
    world = nproc * nnodes
    lr = effective_lr(optim.get("lr", 0.05), batch, optim.get("lr_base_batch"))
    scaled = f" (optim.lr {optim.get('lr')} x {batch}/{optim['lr_base_batch']})" if optim.get("lr_base_batch") else ""
    if world == 1:
        return f"1 process, batch {batch}, lr {lr:g}{scaled}"
    nodes = f"{nnodes} nodes" if nnodes > 1 else "1 node"
    return f"{world} processes ({nodes} x {nproc}), global batch {batch} ({batch // world} each), lr {lr:g}{scaled}"


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"method": {"tau_s": 0.1}} -> {"method.tau_s": 0.1}."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key != "paper":
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def _training_values(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flatten(config).items() if k not in COSMETIC_KEYS}


def fingerprint(config: dict[str, Any]) -> str:
    """Hash of a resolved configuration's values that differ from the defaults.

    Only non-default values count, so a key added to rrdtui later (with a default) leaves the
    fingerprints of existing runs unchanged: a teacher trained before an upgrade is still reused.
    """
    defaults = _training_values(Config().to_dict())
    values = {k: v for k, v in _training_values(config).items() if k not in defaults or defaults[k] != v}
    blob = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def training_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Keys present in both resolved configurations whose values differ (cosmetic keys aside)."""
    fa, fb = _training_values(a), _training_values(b)
    return sorted(k for k in fa.keys() & fb.keys() if fa[k] != fb[k])


# ---------------------------------------------------------------------------------------------
# Building dataclasses from plain mappings, with strict keys and types.
# ---------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return value as type tp, or raise ConfigError naming the key (the caller adds the file)."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")
        return {str(k): _coerce(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'the preset'} must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown key '{path}'{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, path)
        else:
            kwargs[key] = _coerce(value, tp, path)
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Semantic validation: the same rules for the CLI and the dashboard's launch form.
# ---------------------------------------------------------------------------------------------


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        shown = ", ".join(choices) if len(choices) <= 12 else ", ".join(choices[:12]) + ", ..."
        raise ConfigError(f"{key}: unknown value '{value}' ({hint}choose from {shown})")


def _check_positive(key: str, value: float | int) -> None:
    if value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value}")


def _method_options(given: dict[str, Any], declared: dict[str, Any], method: str) -> dict[str, Any]:
    """The method's options: its SPEC's defaults, overridden by the preset's (same types)."""
    for key in given:
        if key not in declared:
            known = ", ".join(declared) or "none"
            close = difflib.get_close_matches(key, list(declared), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"unknown key 'method.options.{key}' for method '{method}' ({hint}its options: {known})")
    resolved = dict(declared)
    for key, value in given.items():
        default = declared[key]
        tp = Any if default is None else list[Any] if isinstance(default, list) else type(default)
        resolved[key] = _coerce(value, tp, f"method.options.{key}")
    return resolved


def _check_world(cfg: Config) -> None:
    """Several processes: a batch that splits evenly, a rendezvous for several nodes, a device each."""
    train = cfg.train
    if cfg.optim.lr_base_batch is not None:
        _check_positive("optim.lr_base_batch", cfg.optim.lr_base_batch)
    if train.nnodes > 1 and not (train.rdzv_endpoint and re.fullmatch(r"[^\s:]+:[0-9]+", train.rdzv_endpoint)):
        raise ConfigError(
            f"train.nnodes {train.nnodes} needs train.rdzv_endpoint, the host:port every node reaches "
            f"(e.g. --set train.rdzv_endpoint=node01:29500), got {train.rdzv_endpoint!r}"
        )
    world = train.world_size
    if world == 1:
        return
    shape = f"train.nproc {train.nproc} x train.nnodes {train.nnodes}"
    if train.batch_size % world:
        raise ConfigError(
            f"train.batch_size {train.batch_size} does not split evenly over {world} processes ({shape}): "
            f"the global batch is divided among them, so choose a multiple of {world}"
        )
    if train.cuda_graphs:
        raise ConfigError(
            f"train.cuda_graphs captures one process's step; with {world} processes ({shape}) DDP's "
            "communication is not captured: leave train.cuda_graphs off"
        )
    if re.fullmatch(r"cuda:[0-9]+", train.device) or train.device == "mps":
        raise ConfigError(
            f"train.device {train.device} names one device but {world} processes train ({shape}): "
            "use auto or cuda (each process takes the GPU of its local rank) or cpu"
        )


def validate(cfg: Config) -> None:
    """Raise ConfigError for the first problem found; fill the method's default loss weights."""
    _check_choice("method.name", cfg.method.name, method_names())
    _check_choice("data.name", cfg.data.name, DATASETS)
    _check_choice("student.arch", cfg.student.arch, ARCHS)
    if cfg.teacher.arch is not None:
        _check_choice("teacher.arch", cfg.teacher.arch, ARCHS)
    _check_choice("method.enqueue", cfg.method.enqueue, ("after", "before"))
    _check_choice("train.amp", cfg.train.amp, ("auto", "bf16", "off"))
    _check_choice("train.teacher_dtype", cfg.train.teacher_dtype, ("fp32", "bf16"))
    device = cfg.train.device
    if not (device in ("auto", "cpu", "mps") or re.fullmatch(r"cuda(:[0-9]+)?", device)):
        raise ConfigError(f"train.device: unknown value '{device}' (choose from auto, cpu, cuda, cuda:N, mps)")

    for key in ("tau_s", "tau_t", "kd_T", "crd_nce_t"):
        _check_positive(f"method.{key}", getattr(cfg.method, key))
    for key in ("feat_dim", "queue_size", "crd_negatives"):
        _check_positive(f"method.{key}", getattr(cfg.method, key))
    if not 0 <= cfg.method.crd_momentum < 1:
        raise ConfigError(f"method.crd_momentum must be in [0, 1), got {cfg.method.crd_momentum}")
    info = method_info(cfg.method.name)
    for key in ("gamma", "alpha", "beta"):
        value = getattr(cfg.method, key)
        if value is None:
            setattr(cfg.method, key, info.weights[key])
        elif value < 0:
            raise ConfigError(f"method.{key} must be >= 0, got {value}")
    cfg.method.options = _method_options(cfg.method.options, info.options, cfg.method.name)

    _check_positive("optim.lr", cfg.optim.lr)
    if not 0 <= cfg.optim.momentum < 1:
        raise ConfigError(f"optim.momentum must be in [0, 1), got {cfg.optim.momentum}")
    if cfg.optim.weight_decay < 0:
        raise ConfigError(f"optim.weight_decay must be >= 0, got {cfg.optim.weight_decay}")
    if cfg.optim.milestones != sorted(set(cfg.optim.milestones)) or any(m <= 0 for m in cfg.optim.milestones):
        raise ConfigError(f"optim.milestones must be increasing positive epochs, got {cfg.optim.milestones}")
    _check_positive("optim.lr_decay", cfg.optim.lr_decay)

    for key in ("epochs", "batch_size", "eval_batch_size", "log_every", "nproc", "nnodes"):
        _check_positive(f"train.{key}", getattr(cfg.train, key))
    _check_world(cfg)
    # A milestone past the last epoch is never reached: the decay the preset asks for never comes
    # (typically a short train.epochs under the default 150/180/210). One at train.epochs is the
    # end of training, the usual way quick runs say "no decay", and passes.
    late = [m for m in cfg.optim.milestones if m > cfg.train.epochs]
    if late:
        kept = ",".join(str(m) for m in cfg.optim.milestones if m <= cfg.train.epochs)
        raise ConfigError(
            f"optim.milestones {cfg.optim.milestones}: {late[0]} is beyond the last epoch (train.epochs "
            f"{cfg.train.epochs}), so the learning rate never decays there: lower optim.milestones "
            f"(e.g. --set optim.milestones=[{kept}]) or raise train.epochs to at least {late[-1]}"
        )
    for key in ("num_classes", "train_size", "val_size", "image_size", "probe_size"):
        _check_positive(f"data.{key}", getattr(cfg.data, key))
    if cfg.data.train_limit is not None:
        _check_positive("data.train_limit", cfg.data.train_limit)
    if cfg.data.holdout < 0:
        raise ConfigError(f"data.holdout must be >= 0 (0 = no holdout), got {cfg.data.holdout}")
    if cfg.data.name == "synthetic" and cfg.data.num_classes < 2:
        raise ConfigError(f"data.num_classes must be at least 2, got {cfg.data.num_classes}")
    if not 0 < cfg.data.val_split < 1:
        raise ConfigError(f"data.val_split must be between 0 and 1, got {cfg.data.val_split}")
    if cfg.data.workers < 0:
        raise ConfigError(f"data.workers must be >= 0, got {cfg.data.workers}")
    if cfg.data.name == "synthetic" and info.losses == ("rrd",):
        trained = cfg.data.train_size - cfg.data.holdout  # the held-out images are not trained on
        if cfg.method.queue_size > trained:
            raise ConfigError(
                f"method.queue_size ({cfg.method.queue_size}) is larger than the training set "
                f"({trained} images): lower method.queue_size"
            )

    refs = [k for k in ("checkpoint", "run", "preset") if getattr(cfg.teacher, k)]
    if cfg.distills:
        if len(refs) != 1:
            raise ConfigError(
                f"method '{cfg.method.name}' needs exactly one of teacher.checkpoint, teacher.run or "
                f"teacher.preset (got {', '.join('teacher.' + r for r in refs) or 'none'})"
            )
        if cfg.teacher.checkpoint and not cfg.teacher.arch:
            raise ConfigError("teacher.checkpoint needs teacher.arch (the architecture the file was saved from)")


# ---------------------------------------------------------------------------------------------
# Files and overrides.
# ---------------------------------------------------------------------------------------------


# A preset is a few hundred bytes; anything this large is a mistake or an attack, refused unread.
MAX_PRESET_BYTES = 1 << 20
# Aliases may repeat what an anchor holds, up to this many nodes in all (a preset needs a handful;
# the "billion laughs" needs hundreds of millions).
MAX_ALIAS_NODES = 100_000

# YAML 1.1 reads 1e-3 and 5e-4 as strings (its floats need a dot and a signed exponent): numbers
# in scientific notation, as everyone writes learning rates and weight decays.
_SCIENTIFIC = r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"


class YAMLBombError(yaml.YAMLError):
    """A document whose aliases expand past MAX_ALIAS_NODES nodes (or refer to themselves)."""


class PresetLoader(yaml.SafeLoader):
    """yaml's SafeLoader, plus scientific notation as floats and a bound on alias expansion.

    The bound is checked on the composed node graph, where an alias is a second reference to its
    anchor's node: counting each node's expanded size once takes time linear in the text, before
    anything is built (building shares nodes too; it is every later copy or repr that explodes).
    """

    def compose_document(self):
        node = super().compose_document()
        _check_expansion(node)
        return node


PresetLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(_SCIENTIFIC), list("-+.0123456789"))


def _check_expansion(root: yaml.Node | None) -> None:
    """Raise YAMLBombError when the tree the graph under root stands for exceeds the bound."""
    if root is None:
        return
    cap = 10**12  # counts saturate here (a bomb's true size has hundreds of digits)
    size: dict[int, int] = {}  # id(node) -> expanded size (saturated), for nodes done
    open_: set[int] = set()  # nodes on the current path: meeting one again is a recursive alias
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            total = 1 + sum(size[id(c)] for c in _children(node))
            size[key] = min(total, cap)
            open_.discard(key)
            continue
        if key in size:
            continue
        if key in open_:
            raise YAMLBombError("a YAML alias refers to the node that holds it (a recursive structure)")
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)
    if size[id(root)] - len(size) > MAX_ALIAS_NODES:  # the nodes aliases add to the distinct ones
        raise YAMLBombError(f"YAML aliases expand past {MAX_ALIAS_NODES:,} nodes (an alias bomb?)")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_yaml(text: str) -> Any:
    """Parse YAML text with PresetLoader (presets and --set values alike).

    Raises yaml.YAMLError, YAMLBombError included, and RecursionError for absurd nesting.
    """
    loader = PresetLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a preset file into a mapping, turning file and syntax problems into one-line errors."""
    if not path.exists():
        raise ConfigError(f"{path}: preset file not found (see `rrdtui presets` for the available ones)")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a preset file")
    try:
        with open(path, "rb") as fh:  # at most one byte past the limit: a huge file is never read whole
            data = fh.read(MAX_PRESET_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_PRESET_BYTES:
        raise ConfigError(
            f"{path}: refused: larger than {MAX_PRESET_BYTES // (1 << 20)} MiB, which no preset needs "
            "(is it the right file?)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (byte {exc.start} is not UTF-8): give a YAML preset") from None
    try:
        raw = load_yaml(text)
    except YAMLBombError as exc:
        raise ConfigError(f"{path}: refused: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: refused: the YAML nests too deep") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: YAML syntax error: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a preset must be a mapping of keys, not {type(raw).__name__}")
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """`method.tau_s=0.05` -> (["method", "tau_s"], 0.05). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected key.path=value, for example --set method.tau_s=0.05")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text}: the key is empty")
    if len(text.encode("utf-8", "replace")) > MAX_PRESET_BYTES:
        raise ConfigError(f"--set {key}=...: refused: the value is larger than {MAX_PRESET_BYTES // (1 << 20)} MiB")
    try:
        parsed = load_yaml(value) if value.strip() else ""
    except YAMLBombError as exc:
        raise ConfigError(f"--set {key}=...: refused: {exc}") from None
    except RecursionError:
        raise ConfigError(f"--set {key}=...: refused: the YAML nests too deep") from None
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of raw with each `key.path=value` applied (unknown keys are caught by _build)."""
    raw = json.loads(json.dumps(raw))  # deep copy of plain YAML data
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text}: '{k}' is not a section")
            node = child
        node[keys[-1]] = value
    return raw


def from_mapping(raw: dict[str, Any], source: str, default: str = "unnamed") -> Config:
    """Build and validate a Config from a mapping; errors are prefixed with `source`."""
    raw = dict(raw)
    raw.setdefault("name", default)
    try:
        cfg = _build(Config, raw, "")
        validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


def load_preset(path: str | os.PathLike[str], overrides: list[str] | None = None) -> Config:
    """Load a preset file, apply overrides and validate. Raises ConfigError (one line)."""
    path = Path(path)
    raw = read_yaml(path)
    source = str(path)
    if overrides:
        try:
            raw = apply_overrides(raw, overrides)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        source = f"{path} (with --set)"
    cfg = from_mapping(raw, source, default=path.stem)
    if cfg.teacher.preset:
        cfg.teacher.preset = str(resolve_teacher_preset(path, cfg.teacher.preset))
    return cfg


def resolve_teacher_preset(preset_path: Path, reference: str) -> Path:
    """A teacher preset path is read relative to the student preset's folder, then to the cwd."""
    candidates = [preset_path.parent / reference, Path(reference)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"{preset_path}: teacher.preset '{reference}' not found (looked in {preset_path.parent} and .)")
