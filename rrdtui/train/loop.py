"""The training loop: build, epoch loop, evaluate, checkpoint, report. One readable function.

Speed rules (DESIGN.md): in-memory data sets sit on the device as uint8 and are augmented there;
loss terms and accuracy accumulate on the device and are read every `train.log_every` steps, never
every step; bf16 autocast and channels_last on CUDA; the teacher runs without autograd.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from rrdtui.config import Config
from rrdtui.train import checkpoint
from rrdtui.train.data import load_data
from rrdtui.train.distributed import SINGLE, Group
from rrdtui.registry import method_info
from rrdtui.train.methods.base import Context, FirstStage, Forward, Method, MethodError, build_method
from rrdtui.train.models import build_model
from rrdtui.train.sources import MemorySource, StreamSource, make_source
from rrdtui.train.stats import logit_correlation_difference, similarity_stats
from rrdtui.train.teacher import load_teacher as _load_teacher

log = logging.getLogger("rrdtui.train")


class TrainError(Exception):
    """A run that cannot go on for a reason the user can fix: one line, stored as the run's error."""


class Diverged(Exception):
    """A loss term became NaN or infinite."""


class Reporter:
    """What the loop needs from whoever records the run (the store's RunReporter implements it)."""

    def log(self, step: int, epoch: float, values: dict[str, float]) -> None: ...
    def flush(self) -> None: ...
    def progress(self, **fields: Any) -> None: ...
    def event(self, level: str, message: str) -> None: ...
    def artifact(self, name: str, value: Any) -> None: ...
    def stop_requested(self) -> bool: ...
    def truncate(self, after_step: int) -> None: ...


@dataclass
class Outcome:
    status: str  # completed | stopped
    final: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"train.device is '{name}' but no CUDA device is available: use --set train.device=cpu")
    return torch.device(name)


def process_device(cfg: Config, group: Group) -> torch.device:
    """The device this process trains on: train.device, and with several processes on CUDA the GPU
    of this process's local rank (one GPU each)."""
    device = pick_device(cfg.train.device)
    if device.type != "cuda" or group.world == 1:
        return device
    if group.local_rank >= torch.cuda.device_count():
        raise TrainError(
            f"train.nproc {cfg.train.nproc} starts a process per GPU but this node has "
            f"{torch.cuda.device_count()} GPU(s): lower train.nproc"
        )
    return torch.device("cuda", group.local_rank)


def environment(device: torch.device) -> dict[str, Any]:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "host": platform.node(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    try:
        repo = Path(__file__).resolve().parents[2]
        env["git_commit"] = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


def learning_rate(cfg: Config, epoch: int) -> float:
    """Multi-step schedule: lr times lr_decay for each milestone reached (epochs are 0-based)."""
    passed = sum(1 for m in cfg.optim.milestones if epoch >= m)
    return cfg.lr * cfg.optim.lr_decay**passed


def load_teacher(arch: str, path: str, num_classes: int, in_channels: int, group: Group = SINGLE) -> nn.Module:
    """The frozen teacher, read by rrdtui.train.teacher (the CLI's preflight reads it the same way).

    With several processes rank 0 reads the file and sends the weights to the others (their nodes
    need not see it)."""
    teacher = None

    def read() -> dict:
        nonlocal teacher
        try:
            teacher = _load_teacher(arch, path, num_classes, in_channels)
        except checkpoint.CheckpointError as exc:
            raise TrainError(str(exc)) from None
        return teacher.state_dict() if group.world > 1 else {}

    state = group.share(read)
    if teacher is None:  # another rank: rank 0's weights, checked there
        teacher = build_model(arch, num_classes, in_channels=in_channels)
        teacher.load_state_dict(state)
        teacher.eval().requires_grad_(False)
    return teacher


def classifier_module(model: nn.Module) -> nn.Linear:
    """The final classifier: the last Linear layer a model registers (true for every zoo model)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1]


def init_student(model: nn.Module, path: str, freeze: bool, group: Group = SINGLE) -> None:
    """Load a checkpoint's weights where names and shapes match (a new classifier keeps its own)."""

    def read() -> dict:  # by rank 0, for every rank
        try:
            return checkpoint.model_state(checkpoint.load(path))
        except checkpoint.CheckpointError as exc:
            raise TrainError(f"student.init: {exc}") from None

    state = group.share(read)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise TrainError(f"student.init: no layer of {path} fits this student: check student.arch")
    model.load_state_dict(usable, strict=False)
    if freeze:
        model.requires_grad_(False)
        classifier_module(model).requires_grad_(True)


@dataclass
class Setup:
    """Everything a training step needs, built once from a configuration."""

    cfg: Config
    device: torch.device
    source: MemorySource | StreamSource
    student: nn.Module
    teacher: nn.Module | None
    method: Method
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    use_bf16: bool
    memory_format: torch.memory_format | None
    teacher_bf16: bool = False  # train.teacher_dtype: bf16
    group: Group = SINGLE  # the processes training the run (rrdtui.train.distributed)
    ddp: nn.Module | None = None  # the student and method in DDP, with several processes (data_parallel)

    def amp(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def amp_for(self, model: nn.Module):
        """The autocast a model runs under: the teacher's own precision (an fp32 teacher runs in fp32
        even inside the student's bf16 autocast), the student's otherwise."""
        if model is not self.teacher:
            return self.amp()
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.teacher_bf16)

    def train_mode(self) -> None:
        # A frozen backbone (linear probe) keeps its BatchNorm statistics: it stays in eval mode.
        self.student.train(not self.cfg.student.freeze)


def build(
    cfg: Config, teacher_path: str | None = None, data=None, device: torch.device | None = None, group: Group = SINGLE
) -> Setup:
    """Data, models, method and optimiser for cfg (data may be given, e.g. synthetic by the benchmark).

    With several processes (group), every rank builds the same thing from the same seed: its share
    of the data, the models, BatchNorm over the global batch (train.sync_bn)."""
    device = device or process_device(cfg, group)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    source = make_source(data if data is not None else load_data(cfg.data), device, cfg, group.rank, group.world)

    student = build_model(cfg.student.arch, source.num_classes, in_channels=source.channels)
    if cfg.student.init:
        init_student(student, cfg.student.init, cfg.student.freeze, group)
    sync_bn = cfg.train.sync_bn and group.world > 1
    if sync_bn:
        student = group.convert_batchnorm(student, device)
    student = student.to(device)
    teacher = None
    if cfg.distills:
        if not teacher_path:
            raise TrainError(f"method '{cfg.method.name}' needs a teacher but none was resolved")
        teacher = load_teacher(cfg.teacher.arch, teacher_path, source.num_classes, source.channels, group).to(device)
    # channels_last also pays on the CPU (oneDNN convolutions skip their layout reorders): about 20%
    # off a resnet step there (BENCHMARKS.md).
    memory_format = torch.channels_last if (device.type in ("cuda", "cpu") and cfg.train.channels_last) else None
    if memory_format is not None:
        student = student.to(memory_format=memory_format)
        if teacher is not None:
            teacher = teacher.to(memory_format=memory_format)
    if cfg.train.compile and device.type in ("cuda", "cpu"):
        # Compile what train_step calls, in place: the modules (and their state-dict keys) stay as
        # they are. Compilation happens at the first call (and on new shapes or modes); a model the
        # compiler fails on runs eagerly from then on, with a warning. Other errors propagate.
        def compiled(model: nn.Module):
            eager, fast = model.forward_with_features, None

            def give_up(exc: Exception) -> None:
                nonlocal fast
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                log.warning("train.compile: %s did not compile (%s); it runs uncompiled", type(model).__name__, reason)
                fast = None

            try:
                fast = torch.compile(eager)
            except RuntimeError as exc:  # torch.compile unsupported on this platform
                give_up(exc)

            def forward_with_features(x: torch.Tensor):
                if fast is not None:
                    try:
                        return fast(x)
                    except Exception as exc:
                        if not type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
                            raise
                        give_up(exc)
                return eager(x)

            return forward_with_features

        student.forward_with_features = compiled(student)
        if teacher is not None:
            teacher.forward_with_features = compiled(teacher)

    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    try:
        method = build_method(
            Context(
                cfg=cfg.method,
                info=method_info(cfg.method.name),
                student=student,
                teacher=teacher,
                train_labels=source.train_labels,
                num_classes=source.num_classes,
                in_channels=source.channels,
                image_size=source.image_size,
                epochs=cfg.train.epochs,
                steps_per_epoch=source.per_epoch,
                batch_size=cfg.train.batch_size,
                generator=torch.Generator().manual_seed(cfg.seed + 1),
                group=group,
            )
        ).to(device)
    except MethodError as exc:
        raise TrainError(f"method {cfg.method.name}: {exc}") from None
    if sync_bn:
        method = group.convert_batchnorm(method, device)  # a connector's BatchNorm (FitNet, AB, FT)
    if hasattr(method, "generator"):
        method.generator = generator
    params = [p for p in list(student.parameters()) + list(method.parameters()) if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    use_bf16 = device.type == "cuda" and cfg.train.amp in ("auto", "bf16")
    # A bf16 teacher also on the CPU (autocast there too): it emulates the GPU's teacher targets.
    teacher_bf16 = cfg.train.teacher_dtype == "bf16" and device.type in ("cuda", "cpu")
    return Setup(
        cfg, device, source, student, teacher, method, optimizer, generator, use_bf16, memory_format, teacher_bf16,
        group,
    )  # fmt: skip


def forward_batch(setup: Setup, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, step: int, epoch: int) -> Forward:
    """Student (with autograd) and teacher (without) on one batch: what the method's SPEC asks for."""
    method = setup.method
    s_maps = t_maps = t_feat = t_logits = None
    if method.wants_maps:
        s_maps, s_feat, s_logits = setup.student.forward_with_maps(x, preact=method.preact)
    else:
        s_feat, s_logits = setup.student.forward_with_features(x)
    if setup.teacher is not None:
        with torch.no_grad(), setup.amp_for(setup.teacher):
            if method.wants_maps:
                t_maps, t_feat, t_logits = setup.teacher.forward_with_maps(x, preact=method.preact)
            else:
                t_feat, t_logits = setup.teacher.forward_with_features(x)
        if setup.teacher_bf16 and not setup.use_bf16:  # the method's layers outside autocast are fp32
            t_feat, t_logits = t_feat.float(), t_logits.float()
            t_maps = [m.float() for m in t_maps] if t_maps is not None else None
    return Forward(s_feat, s_logits, t_feat, t_logits, y, index, step, epoch, s_maps, t_maps)


def batch_loss(setup: Setup, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, step: int, epoch: int):
    """One batch's weighted loss, its terms and the student's logits."""
    out = forward_batch(setup, x, y, index, step, epoch)
    terms = setup.method.terms(out)
    loss = sum(setup.method.weights[k] * v for k, v in terms.items())
    return loss, terms, out.student_logits


class DataParallelStep(nn.Module):
    """The student and the method as one module whose forward is batch_loss: what DDP wraps, so the
    gradients of both are averaged over the ranks during backward. The frozen teacher stays out."""

    def __init__(self, setup: Setup):
        super().__init__()
        self.student, self.method = setup.student, setup.method
        self.loss = functools.partial(batch_loss, setup)

    def forward(self, x, y, index, step: int, epoch: int):
        return self.loss(x, y, index, step, epoch)


def data_parallel(setup: Setup) -> None:
    """With several processes, wrap the step in DDP (before the main stage: a first stage trains
    other parameters). Parameters the main optimiser does not train (AB's connectors after their
    first stage) are frozen first: DDP waits for a gradient of every trainable parameter."""
    if setup.group.world == 1:
        return
    trained = {id(p) for g in setup.optimizer.param_groups for p in g["params"]}
    for p in list(setup.student.parameters()) + list(setup.method.parameters()):
        if id(p) not in trained:
            p.requires_grad_(False)
    setup.ddp = setup.group.data_parallel(DataParallelStep(setup), setup.device)


def train_step(setup: Setup, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, step: int = 0, epoch: int = 0):
    """One optimisation step; returns (loss, terms, correct) as device tensors, never synchronising."""
    if setup.memory_format is not None:
        x = x.contiguous(memory_format=setup.memory_format)
    with setup.amp():
        if setup.ddp is None:
            loss, terms, s_logits = batch_loss(setup, x, y, index, step, epoch)
        else:  # several processes: the same loss, its gradients averaged over the ranks in backward
            loss, terms, s_logits = setup.ddp(x, y, index, step, epoch)
    setup.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    setup.optimizer.step()
    setup.method.after_step()
    correct = (s_logits.detach().argmax(1) == y).sum()
    return loss, terms, correct


def run_first_stage(setup: Setup, stage: FirstStage, reporter: Reporter, stop_flag: Callable[[], bool]) -> bool:
    """Train a method's first stage (AB's connectors, FT's paraphraser, FSP) before the run proper.

    Its terms are reported as first/loss_<term> at negative steps (-N .. -1), so the main stage's
    rows start at step 1 as in every run. Returns False when a stop came (nothing is kept: a resume
    trains the first stage again from the start).
    """
    cfg, source = setup.cfg, setup.source
    optimizer = torch.optim.SGD(stage.parameters, lr=stage.lr, momentum=stage.momentum, weight_decay=stage.weight_decay)
    setup.student.train(stage.student_train)
    total = stage.epochs * source.per_epoch
    step = -total
    sums: dict[str, torch.Tensor] = {}
    count = 0
    log.info("first stage: %d epochs of %d steps (%s)", stage.epochs, source.per_epoch, setup.method.info.first_stage)
    for epoch in range(stage.epochs):
        perm = source.permutation(setup.generator)
        for i, (x, y, index) in enumerate(source.epoch(perm, 0, setup.generator)):
            if setup.memory_format is not None:
                x = x.contiguous(memory_format=setup.memory_format)
            with setup.amp():
                terms = stage.loss(forward_batch(setup, x, y, index, step, epoch))
                loss = sum(terms.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            setup.group.average_gradients(stage.parameters)  # no DDP here: one process, nothing done
            optimizer.step()
            step += 1
            count += 1
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach().double()
            if count == cfg.train.log_every or step == 0:
                means = setup.group.sum(torch.stack(list(sums.values()))) / setup.group.world
                values = {f"first/loss_{k}": v / count for k, v in zip(sums, means.tolist())}
                bad = [k for k, v in values.items() if not math.isfinite(v)]
                if bad:
                    raise Diverged(f"{bad[0]} became {values[bad[0]]} in the first stage")
                reporter.log(step - 1, epoch + (i + 1) / source.per_epoch - stage.epochs, values)
                sums, count = {}, 0
            if should_stop(setup, stop_flag, reporter, step % cfg.train.log_every == 0):
                return False
    setup.train_mode()
    return True


def should_stop(setup: Setup, stop_flag: Callable[[], bool], reporter: Reporter, row: bool) -> bool:
    """Stop after this step? One process reads its stop flag (a signal) every step and the store's
    stop request at each metrics `row`. Several processes decide at the rows only, all together, so
    every rank stops after the same step (one tiny all-reduce per row)."""
    if setup.group.world == 1:
        return stop_flag() or (row and bool(reporter.stop_requested()))
    return row and setup.group.any(stop_flag() or bool(reporter.stop_requested()))


@torch.no_grad()
def evaluate(model: nn.Module, setup: Setup, holdout: bool = False) -> tuple[float, float]:
    """Top-1 accuracy (%) and mean cross-entropy on the validation set (or the held-out training images)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=setup.device)
    loss_sum = torch.zeros((), device=setup.device, dtype=torch.float64)
    source = setup.source
    batches, n = (source.holdout(), source.n_holdout) if holdout else (source.val(), source.n_val)
    for x, y in batches:
        with setup.amp_for(model):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    if setup.group.world > 1:  # each rank evaluated its part of the images
        correct, loss_sum = setup.group.sum(torch.stack([correct.double(), loss_sum]))
    return float(correct) / n * 100, float(loss_sum) / n


@torch.no_grad()
def probe_outputs(model: nn.Module, x: torch.Tensor, setup: Setup) -> tuple[torch.Tensor, torch.Tensor]:
    was_training = model.training
    model.eval()
    with setup.amp_for(model):
        feat, logits = model.forward_with_features(x)
    model.train(was_training)
    return feat.float(), logits.float()


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def train(
    cfg: Config,
    run_dir: Path,
    reporter: Reporter,
    teacher_path: str | None = None,
    resume: bool = False,
    stop_flag: Callable[[], bool] = lambda: False,
    group: Group = SINGLE,
) -> Outcome:
    """Train cfg's student (from teacher_path's teacher when the method distils) and report.

    Returns the outcome (completed or stopped); raises TrainError, DataError or Diverged otherwise.
    With several processes every rank calls this with the same arguments; only rank 0 is given the
    store's reporter and writes files (the others report to a Reporter(), which does nothing).
    """
    run_dir = Path(run_dir)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    writer = group.rank == 0

    # A resumed run continues from its last checkpoint; metric rows past that step are dropped
    # first, so its history has no duplicate and no gap. Rank 0 reads it for every rank.
    resume_state = None
    if resume:
        resume_state = group.share(lambda: checkpoint.load(last_path) if last_path.exists() else None)
        reporter.truncate(resume_state["step"] if resume_state is not None else -1)

    setup = build(cfg, teacher_path, group=group)
    from rrdtui.train.graphs import make_step  # here: graphs imports this module

    step_fn = make_step(setup)  # train_step, or its CUDA-graph replay (train.cuda_graphs)
    device, source, student, teacher, method, optimizer = (
        setup.device, setup.source, setup.student, setup.teacher, setup.method, setup.optimizer
    )  # fmt: skip
    if writer:
        # The run's scale is stored with it: processes, global and per-process batch, learning rate.
        scale = {"world_size": group.world, "batch_size": cfg.train.batch_size, "lr": cfg.lr}
        scale["per_process_batch"] = cfg.train.batch_size // group.world
        reporter.progress(env=json.dumps({**environment(device), **scale}))
    # The probe comes from the validation (test) split even with a holdout: its statistics describe
    # teacher and student and choose nothing, and the same images serve every run of the data.
    probe_x, probe_y = source.probe(cfg.data.probe_size, cfg.data.data_seed)
    # With data.holdout the best epoch is chosen on held-out training images (val/*) and the data
    # set's own validation split, never used to choose, is reported as the test set (test/*).
    holdout = source.n_holdout > 0

    # -- teacher preflight: its accuracy on our validation set, before any student step --------
    teacher_probe = None
    if teacher is not None:
        t_acc, t_loss = evaluate(teacher, setup)
        if resume_state is None:  # a resumed run has these rows already
            reporter.log(0, 0.0, {"teacher/val_acc": t_acc, "teacher/val_loss": t_loss})
        reporter.progress(teacher_acc=t_acc)
        message = f"teacher {cfg.teacher.arch}: {t_acc:.2f}% top-1 on the validation set"
        log.info(message)
        reporter.event("info", message)
        expected = cfg.teacher.expected_acc
        if expected is not None and t_acc < expected - 1.0:
            warning = (
                f"TEACHER CHECK: measured {t_acc:.2f}% but teacher.expected_acc is {expected:.2f}% "
                "(more than 1 point lower): wrong checkpoint, architecture or data set?"
            )
            log.warning(warning)
            reporter.event("warning", warning)
        teacher_probe = probe_outputs(teacher, probe_x, setup)

    # -- state: fresh or resumed --------------------------------------------------------------
    epoch, start_batch, step, best_acc, perm = 0, 0, 0, -1.0, None
    # Device-side accumulators, read every log_every steps (one synchronisation per interval).
    names = ["loss"] + [f"loss_{k}" for k in method.weights]
    interval = torch.zeros(len(names) + 1, device=device, dtype=torch.float64)  # terms + correct
    epoch_correct, epoch_seen = 0.0, 0  # of the intervals read so far this epoch (every rank's)
    interval_steps, interval_images, interval_start = 0, 0, time.perf_counter()
    if resume_state is not None:
        state = resume_state
        student.load_state_dict(state["model"])
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        setup.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        epoch, start_batch, step, best_acc = state["epoch"], state["batch"], state["step"], state["best_acc"]
        perm = state["perm"].to(device) if state.get("perm") is not None else None
        if state.get("interval") is not None:  # stopped mid-interval: carry on with its sums
            held = state["interval"]
            interval.copy_(held["sums"])
            epoch_correct = float(held["epoch_correct"])
            interval_steps, interval_images, epoch_seen = held["steps"], held["images"], held["epoch_seen"]
            interval_start -= held["elapsed"]
            if "world_size" not in state:  # written before epoch sums were taken per interval
                epoch_correct, epoch_seen = epoch_correct - float(held["sums"][-1]), epoch_seen - interval_images
            if not writer:  # rank 0 alone carries the sums (several processes stop between intervals)
                interval.zero_()
                interval_images = 0
        reporter.event("info", f"resumed from epoch {epoch}, step {step}")
        log.info("resumed from epoch %d, step %d", epoch, step)
        saved_world = state.get("world_size", 1)
        if saved_world != group.world:  # asked for (rrdtui resume --nproc): the step is the same
            message = (
                f"resumed with {group.world} processes (it had {saved_world}): "
                f"{cfg.train.batch_size // group.world} images per process (was {cfg.train.batch_size // saved_world})"
            )
            log.warning(message)
            reporter.event("warning", message)

    def save(next_epoch: int, next_batch: int, current_perm: torch.Tensor | None) -> None:
        if not writer:
            return
        reporter.flush()  # every metric up to `step` is stored before the checkpoint that follows it
        checkpoint.save_atomic(
            {
                # Mid-epoch, the sums not yet reported: a resumed run reports exactly the rows an
                # uninterrupted one does (a stop writes no partial row of its own).
                "interval": {
                    "sums": interval.cpu(),
                    "steps": interval_steps,
                    "images": interval_images,
                    "elapsed": time.perf_counter() - interval_start,
                    "epoch_correct": epoch_correct,
                    "epoch_seen": epoch_seen,
                },
                "model": student.state_dict(),
                "method": method.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": setup.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "epoch": next_epoch,
                "batch": next_batch,
                "perm": current_perm.cpu() if current_perm is not None else None,
                "step": step,
                "best_acc": best_acc,
                "arch": cfg.student.arch,
                "num_classes": source.num_classes,
                "config": cfg.to_dict(),
                "world_size": group.world,
            },
            last_path,
        )

    total_steps = source.per_epoch * cfg.train.epochs
    reporter.progress(total_steps=total_steps, epoch=epoch, step=step)
    setup.train_mode()
    log.info(
        "training %s (%s) on %s, %d epochs of %d steps, device %s",
        cfg.student.arch, cfg.method.name, cfg.data.name, cfg.train.epochs, source.per_epoch, device,
    )  # fmt: skip
    if holdout:
        log.info("best epoch chosen on %d held-out training images; the validation split is test/*", source.n_holdout)

    def read_interval() -> None:
        nonlocal interval_steps, interval_images, interval_start, epoch_correct, epoch_seen
        if group.world == 1:
            values, images = interval.tolist(), interval_images
        else:  # every rank's sums: the terms are means over equal shares, so their mean is the batch's
            values = group.sum(torch.cat([interval, interval.new_tensor([interval_images])])).tolist()
            images = int(values.pop())
        elapsed = time.perf_counter() - interval_start
        averages = {f"train/{n}": v / (interval_steps * group.world) for n, v in zip(names, values[:-1])}
        bad = [n for n, v in averages.items() if not math.isfinite(v)]
        if bad:
            raise Diverged(f"{bad[-1]} became {averages[bad[-1]]} by step {step}")
        averages["train/acc"] = values[-1] / images * 100
        averages["train/lr"] = optimizer.param_groups[0]["lr"]
        averages["train/throughput"] = images / max(elapsed, 1e-9)  # every process's images
        epoch_correct += values[-1]
        epoch_seen += images
        reporter.log(step, step / source.per_epoch, averages)
        reporter.progress(step=step)
        interval.zero_()
        interval_steps, interval_images, interval_start = 0, 0, time.perf_counter()

    # A stop that came while the run was being built (data, models, teacher check) ends it here,
    # before any step: the checkpoint it resumes from, if any, is the one it started from.
    stopping = should_stop(setup, stop_flag, reporter, True)
    stage = method.first_stage(student) if resume_state is None and not stopping else None
    if stage is not None:
        stopping = not run_first_stage(setup, stage, reporter, stop_flag)
        if not stopping:
            save(0, 0, None)  # a resume starts the main stage from here, the first stage done
            reporter.event("info", "first stage done")
    if stopping:
        reporter.event("info", f"stopped at epoch {epoch}, step {step}, before training; resumable")
        log.info("stopped before training (epoch %d, step %d)", epoch, step)
    data_parallel(setup)
    val_acc = None
    while epoch < cfg.train.epochs and not stopping:
        lr = learning_rate(cfg, epoch)
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
        if perm is None:
            perm = source.permutation(setup.generator)
            start_batch = 0
            epoch_correct, epoch_seen = 0.0, 0
        for i, (x, y, index) in enumerate(source.epoch(perm, start_batch, setup.generator), start=start_batch):
            loss, terms, correct = step_fn(setup, x, y, index, step, epoch)
            step += 1
            interval += torch.stack(
                [loss.detach().double()] + [terms[k].detach().double() for k in method.weights] + [correct.double()]
            )
            interval_steps += 1
            interval_images += index.shape[0]
            if step % cfg.train.log_every == 0:
                read_interval()
            stopping = should_stop(setup, stop_flag, reporter, step % cfg.train.log_every == 0)
            if stopping:
                save(epoch, i + 1, perm)
                reporter.event("info", f"stopped at epoch {epoch}, step {step}; resumable")
                log.info("stopped at epoch %d step %d; checkpoint written", epoch, step)
                break
        if stopping:
            break
        if interval_steps:
            read_interval()

        # -- end of epoch: evaluate, similarity statistics, checkpoint ------------------------
        epoch += 1
        perm = None
        if group.world > 1 and not cfg.train.sync_bn:
            group.broadcast_buffers(student)  # each rank's BatchNorm statistics differ: rank 0's serve
        val_acc, val_loss = evaluate(student, setup, holdout)
        values = {
            "val/acc": val_acc,
            "val/loss": val_loss,
            "train/epoch_acc": epoch_correct / max(epoch_seen, 1) * 100,
        }
        if holdout:
            values["test/acc"], values["test/loss"] = evaluate(student, setup)
        if teacher_probe is not None:
            s_feat, s_logits = probe_outputs(student, probe_x, setup)
            t_feat, t_logits = teacher_probe
            stats = similarity_stats(s_feat, s_logits, t_feat, t_logits, probe_y, source.num_classes)
            stats.update(method.probe_stats(s_feat, t_feat))
            values.update({k: float(v) for k, v in stats.items()})
        reporter.log(step, float(epoch), values)
        improved = val_acc > best_acc
        best_acc = max(best_acc, val_acc)
        reporter.progress(epoch=epoch, step=step, best_acc=best_acc)
        log.info(
            "epoch %d/%d  lr %.4g  val/acc %.2f  val/loss %.4f%s",
            epoch, cfg.train.epochs, lr, val_acc, val_loss,
            "".join(f"  {k} {v:.4g}" for k, v in values.items() if k.startswith(("test/", "sim/", "rrd/"))),
        )  # fmt: skip
        if not math.isfinite(val_loss):
            raise Diverged(f"val/loss became {val_loss} at epoch {epoch}")
        save(epoch, 0, None)
        if improved and writer:
            checkpoint.save_atomic({"model": student.state_dict(), "epoch": epoch, "val_acc": val_acc}, best_path)
        if should_stop(setup, stop_flag, reporter, True):
            stopping = epoch < cfg.train.epochs
            if stopping:
                reporter.event("info", f"stopped after epoch {epoch}; resumable")

    if stopping:
        return Outcome("stopped", {"best_acc": best_acc})
    if val_acc is None:  # resumed after the last epoch's checkpoint: nothing left to train
        val_acc, _ = evaluate(student, setup, holdout)
    if teacher_probe is not None:
        s_feat, s_logits = probe_outputs(student, probe_x, setup)
        diff = logit_correlation_difference(s_logits, teacher_probe[1], probe_y, source.num_classes)
        present = torch.nonzero(torch.bincount(probe_y, minlength=source.num_classes) > 0).flatten().tolist()
        reporter.artifact(
            "logit_corr_diff", {"classes": present, "matrix": [[round(v, 5) for v in row] for row in diff.tolist()]}
        )
    return Outcome("completed", {"val_acc": val_acc, "best_acc": best_acc})
