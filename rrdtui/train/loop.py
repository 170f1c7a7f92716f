"""The training loop: build, epoch loop, evaluate, checkpoint, report. One readable function.

Speed rules (DESIGN.md): in-memory data sets sit on the device as uint8 and are augmented there;
loss terms and accuracy accumulate on the device and are read every `train.log_every` steps, never
every step; bf16 autocast and channels_last on CUDA; the teacher runs without autograd.
"""

from __future__ import annotations

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
    return cfg.optim.lr * cfg.optim.lr_decay**passed


def load_teacher(arch: str, path: str, num_classes: int, in_channels: int) -> nn.Module:
    """The frozen teacher, read by rrdtui.train.teacher (the CLI's preflight reads it the same way)."""
    try:
        return _load_teacher(arch, path, num_classes, in_channels)
    except checkpoint.CheckpointError as exc:
        raise TrainError(str(exc)) from None


def classifier_module(model: nn.Module) -> nn.Linear:
    """The final classifier: the last Linear layer a model registers (true for every zoo model)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1]


def init_student(model: nn.Module, path: str, freeze: bool) -> None:
    """Load a checkpoint's weights where names and shapes match (a new classifier keeps its own)."""
    try:
        state = checkpoint.model_state(checkpoint.load(path))
    except checkpoint.CheckpointError as exc:
        raise TrainError(f"student.init: {exc}") from None
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

    def amp(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def train_mode(self) -> None:
        # A frozen backbone (linear probe) keeps its BatchNorm statistics: it stays in eval mode.
        self.student.train(not self.cfg.student.freeze)


def build(cfg: Config, teacher_path: str | None = None, data=None, device: torch.device | None = None) -> Setup:
    """Data, models, method and optimiser for cfg (data may be given, e.g. synthetic by the benchmark)."""
    device = device or pick_device(cfg.train.device)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    source = make_source(data if data is not None else load_data(cfg.data), device, cfg)

    student = build_model(cfg.student.arch, source.num_classes, in_channels=source.channels)
    if cfg.student.init:
        init_student(student, cfg.student.init, cfg.student.freeze)
    student = student.to(device)
    teacher = None
    if cfg.distills:
        if not teacher_path:
            raise TrainError(f"method '{cfg.method.name}' needs a teacher but none was resolved")
        teacher = load_teacher(cfg.teacher.arch, teacher_path, source.num_classes, source.channels).to(device)
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
            )
        ).to(device)
    except MethodError as exc:
        raise TrainError(f"method {cfg.method.name}: {exc}") from None
    if hasattr(method, "generator"):
        method.generator = generator
    params = [p for p in list(student.parameters()) + list(method.parameters()) if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay
    )
    use_bf16 = device.type == "cuda" and cfg.train.amp in ("auto", "bf16")
    return Setup(cfg, device, source, student, teacher, method, optimizer, generator, use_bf16, memory_format)


def forward_batch(setup: Setup, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, step: int, epoch: int) -> Forward:
    """Student (with autograd) and teacher (without) on one batch: what the method's SPEC asks for."""
    method = setup.method
    s_maps = t_maps = t_feat = t_logits = None
    if method.wants_maps:
        s_maps, s_feat, s_logits = setup.student.forward_with_maps(x, preact=method.preact)
    else:
        s_feat, s_logits = setup.student.forward_with_features(x)
    if setup.teacher is not None:
        with torch.no_grad():
            if method.wants_maps:
                t_maps, t_feat, t_logits = setup.teacher.forward_with_maps(x, preact=method.preact)
            else:
                t_feat, t_logits = setup.teacher.forward_with_features(x)
    return Forward(s_feat, s_logits, t_feat, t_logits, y, index, step, epoch, s_maps, t_maps)


def train_step(setup: Setup, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, step: int = 0, epoch: int = 0):
    """One optimisation step; returns (loss, terms, correct) as device tensors, never synchronising."""
    if setup.memory_format is not None:
        x = x.contiguous(memory_format=setup.memory_format)
    with setup.amp():
        out = forward_batch(setup, x, y, index, step, epoch)
        s_logits = out.student_logits
        terms = setup.method.terms(out)
        loss = sum(setup.method.weights[k] * v for k, v in terms.items())
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
            optimizer.step()
            step += 1
            count += 1
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach().double()
            if count == cfg.train.log_every or step == 0:
                values = {f"first/loss_{k}": float(v) / count for k, v in sums.items()}
                bad = [k for k, v in values.items() if not math.isfinite(v)]
                if bad:
                    raise Diverged(f"{bad[0]} became {values[bad[0]]} in the first stage")
                reporter.log(step - 1, epoch + (i + 1) / source.per_epoch - stage.epochs, values)
                sums, count = {}, 0
            if stop_flag() or (step % cfg.train.log_every == 0 and reporter.stop_requested()):
                return False
    setup.train_mode()
    return True


@torch.no_grad()
def evaluate(model: nn.Module, setup: Setup) -> tuple[float, float]:
    """Top-1 accuracy (%) and mean cross-entropy on the validation set."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=setup.device)
    loss_sum = torch.zeros((), device=setup.device, dtype=torch.float64)
    for x, y in setup.source.val():
        with setup.amp():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    n = setup.source.n_val
    return float(correct) / n * 100, float(loss_sum) / n


@torch.no_grad()
def probe_outputs(model: nn.Module, x: torch.Tensor, setup: Setup) -> tuple[torch.Tensor, torch.Tensor]:
    was_training = model.training
    model.eval()
    with setup.amp():
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
) -> Outcome:
    """Train cfg's student (from teacher_path's teacher when the method distils) and report.

    Returns the outcome (completed or stopped); raises TrainError, DataError or Diverged otherwise.
    """
    run_dir = Path(run_dir)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"

    # A resumed run continues from its last checkpoint; metric rows past that step are dropped
    # first, so its history has no duplicate and no gap.
    resume_state = None
    if resume and last_path.exists():
        resume_state = checkpoint.load(last_path)
        reporter.truncate(resume_state["step"])
    elif resume:
        reporter.truncate(-1)

    setup = build(cfg, teacher_path)
    device, source, student, teacher, method, optimizer = (
        setup.device, setup.source, setup.student, setup.teacher, setup.method, setup.optimizer
    )  # fmt: skip
    reporter.progress(env=json.dumps(environment(device)))
    probe_x, probe_y = source.probe(cfg.data.probe_size)

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
    epoch_correct = torch.zeros((), device=device, dtype=torch.float64)
    epoch_seen = 0
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
            epoch_correct.copy_(held["epoch_correct"])
            interval_steps, interval_images, epoch_seen = held["steps"], held["images"], held["epoch_seen"]
            interval_start -= held["elapsed"]
        reporter.event("info", f"resumed from epoch {epoch}, step {step}")
        log.info("resumed from epoch %d, step %d", epoch, step)

    def save(next_epoch: int, next_batch: int, current_perm: torch.Tensor | None) -> None:
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
                    "epoch_correct": epoch_correct.cpu(),
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

    def read_interval() -> None:
        nonlocal interval_steps, interval_images, interval_start
        values = interval.tolist()
        elapsed = time.perf_counter() - interval_start
        averages = {f"train/{n}": v / interval_steps for n, v in zip(names, values[:-1])}
        bad = [n for n, v in averages.items() if not math.isfinite(v)]
        if bad:
            raise Diverged(f"{bad[-1]} became {averages[bad[-1]]} by step {step}")
        averages["train/acc"] = values[-1] / interval_images * 100
        averages["train/lr"] = optimizer.param_groups[0]["lr"]
        averages["train/throughput"] = interval_images / max(elapsed, 1e-9)
        reporter.log(step, step / source.per_epoch, averages)
        reporter.progress(step=step)
        interval.zero_()
        interval_steps, interval_images, interval_start = 0, 0, time.perf_counter()

    # A stop that came while the run was being built (data, models, teacher check) ends it here,
    # before any step: the checkpoint it resumes from, if any, is the one it started from.
    stopping = stop_flag() or reporter.stop_requested()
    stage = method.first_stage(student) if resume_state is None and not stopping else None
    if stage is not None:
        stopping = not run_first_stage(setup, stage, reporter, stop_flag)
        if not stopping:
            save(0, 0, None)  # a resume starts the main stage from here, the first stage done
            reporter.event("info", "first stage done")
    if stopping:
        reporter.event("info", f"stopped at epoch {epoch}, step {step}, before training; resumable")
        log.info("stopped before training (epoch %d, step %d)", epoch, step)
    val_acc = None
    while epoch < cfg.train.epochs and not stopping:
        lr = learning_rate(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if perm is None:
            perm = source.permutation(setup.generator)
            start_batch = 0
            epoch_correct.zero_()
            epoch_seen = 0
        for i, (x, y, index) in enumerate(source.epoch(perm, start_batch, setup.generator), start=start_batch):
            loss, terms, correct = train_step(setup, x, y, index, step, epoch)
            step += 1
            interval += torch.stack(
                [loss.detach().double()] + [terms[k].detach().double() for k in method.weights] + [correct.double()]
            )
            epoch_correct += correct
            epoch_seen += index.shape[0]
            interval_steps += 1
            interval_images += index.shape[0]
            if step % cfg.train.log_every == 0:
                read_interval()
                if reporter.stop_requested():
                    stopping = True
            if stop_flag():
                stopping = True
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
        val_acc, val_loss = evaluate(student, setup)
        values = {
            "val/acc": val_acc,
            "val/loss": val_loss,
            "train/epoch_acc": float(epoch_correct) / max(epoch_seen, 1) * 100,
        }
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
            "".join(f"  {k} {v:.4g}" for k, v in values.items() if k.startswith(("sim/", "rrd/"))),
        )  # fmt: skip
        if not math.isfinite(val_loss):
            raise Diverged(f"val/loss became {val_loss} at epoch {epoch}")
        save(epoch, 0, None)
        if improved:
            checkpoint.save_atomic({"model": student.state_dict(), "epoch": epoch, "val_acc": val_acc}, best_path)
        if stop_flag() or reporter.stop_requested():
            stopping = epoch < cfg.train.epochs
            if stopping:
                reporter.event("info", f"stopped after epoch {epoch}; resumable")

    if stopping:
        return Outcome("stopped", {"best_acc": best_acc})
    if val_acc is None:  # resumed after the last epoch's checkpoint: nothing left to train
        val_acc, _ = evaluate(student, setup)
    if teacher_probe is not None:
        s_feat, s_logits = probe_outputs(student, probe_x, setup)
        diff = logit_correlation_difference(s_logits, teacher_probe[1], probe_y, source.num_classes)
        present = torch.nonzero(torch.bincount(probe_y, minlength=source.num_classes) > 0).flatten().tolist()
        reporter.artifact(
            "logit_corr_diff", {"classes": present, "matrix": [[round(v, 5) for v in row] for row in diff.tolist()]}
        )
    return Outcome("completed", {"val_acc": val_acc, "best_acc": best_acc})
