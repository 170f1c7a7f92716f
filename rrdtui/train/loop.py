"""The training loop: build, epoch loop, evaluate, checkpoint, report. One readable function.

Speed rules (DESIGN.md): in-memory data sets sit on the device as uint8 and are augmented there;
loss terms and accuracy accumulate on the device and are read every `train.log_every` steps, never
every step; bf16 autocast and channels_last on CUDA; the teacher runs without autograd.
"""

from __future__ import annotations

import json
import logging
import math
import os
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
from rrdtui.train.data import BatchAugment, DataError, InMemoryData, StreamingData, load_data
from rrdtui.train.methods import Forward, Method, build_method
from rrdtui.train.models import build_model
from rrdtui.train.stats import logit_correlation_difference, similarity_stats

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
    """Build the teacher, load its weights (ours or the published format) and freeze it."""
    try:
        obj = checkpoint.load(path)
        state = checkpoint.model_state(obj)
    except checkpoint.CheckpointError as exc:
        raise TrainError(f"teacher: {exc}") from None
    model = build_model(arch, num_classes, in_channels=in_channels)
    expected = model.state_dict()
    for key, tensor in state.items():
        if key in expected and expected[key].shape != tensor.shape and tensor.ndim == 2 and key.endswith("weight"):
            if tensor.shape[1] == expected[key].shape[1]:
                raise TrainError(
                    f"teacher {path} predicts {tensor.shape[0]} classes but the data set has {num_classes}: "
                    "use a teacher trained on this data set"
                )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise TrainError(
            f"teacher {path} does not fit teacher.arch '{arch}' ({first}): check teacher.arch"
        ) from None
    model.eval()
    model.requires_grad_(False)
    return model


class Batches:
    """Shuffled index batches over an in-memory training set, resumable mid-epoch."""

    def __init__(self, n: int, batch_size: int, device: torch.device, generator: torch.Generator):
        self.n = n
        self.batch_size = batch_size
        self.device = device
        self.generator = generator
        # BatchNorm cannot train on a batch of one: drop a last batch of a single sample.
        full, rest = divmod(n, batch_size)
        self.per_epoch = full + (1 if rest > 1 else 0)

    def permutation(self) -> torch.Tensor:
        return torch.randperm(self.n, device=self.device, generator=self.generator)

    def slice(self, perm: torch.Tensor, i: int) -> torch.Tensor:
        return perm[i * self.batch_size : (i + 1) * self.batch_size]


@torch.no_grad()
def evaluate(
    model: nn.Module, data: InMemoryData, augment: BatchAugment, batch_size: int, device: torch.device, amp
) -> tuple[float, float]:
    """Top-1 accuracy (%) and mean cross-entropy on the validation set."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    for start in range(0, data.val_x.shape[0], batch_size):
        x = augment.normalise(data.val_x[start : start + batch_size])
        y = data.val_y[start : start + batch_size]
        with amp():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    n = data.val_x.shape[0]
    return float(correct) / n * 100, float(loss_sum) / n


@torch.no_grad()
def probe_outputs(model: nn.Module, x: torch.Tensor, amp) -> tuple[torch.Tensor, torch.Tensor]:
    was_training = model.training
    model.eval()
    with amp():
        feat, logits = model.forward_with_features(x)
    model.train(was_training)
    return feat.float(), logits.float()


def to_device_data(data: InMemoryData, device: torch.device) -> InMemoryData:
    for name in ("train_x", "train_y", "val_x", "val_y"):
        setattr(data, name, getattr(data, name).to(device, non_blocking=True))
    return data


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
    device = pick_device(cfg.train.device)
    torch.manual_seed(cfg.seed)
    use_bf16 = device.type == "cuda" and cfg.train.amp in ("auto", "bf16")

    def amp():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    reporter.progress(env=json.dumps(environment(device)))

    # A resumed run continues from its last checkpoint; metric rows past that step are dropped
    # first, so its history has no duplicate and no gap.
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    resume_state = None
    if resume and last_path.exists():
        resume_state = checkpoint.load(last_path, map_location=device)
        reporter.truncate(resume_state["step"])
    elif resume:
        reporter.truncate(-1)

    # -- data ---------------------------------------------------------------------------------
    data = load_data(cfg.data)
    if isinstance(data, StreamingData):
        raise TrainError(
            f"data set '{cfg.data.name}' streams from disk; the streaming loop is not built yet "
            "(in-memory data sets: synthetic, cifar10, cifar100, fashion_mnist, stl10, tiny_imagenet)"
        )
    data = to_device_data(data, device)
    n_train = data.train_x.shape[0]
    if cfg.method.name.startswith("rrd") and cfg.method.queue_size > n_train:
        raise TrainError(
            f"method.queue_size ({cfg.method.queue_size}) is larger than the training set ({n_train}): "
            "lower method.queue_size"
        )
    augment = BatchAugment(data, device)
    probe_x = augment.normalise(data.val_x[: cfg.data.probe_size])
    probe_y = data.val_y[: cfg.data.probe_size]

    # -- models -------------------------------------------------------------------------------
    student = build_model(cfg.student.arch, data.num_classes, in_channels=data.channels).to(device)
    teacher = None
    if cfg.distills:
        if not teacher_path:
            raise TrainError(f"method '{cfg.method.name}' needs a teacher but none was resolved")
        teacher = load_teacher(cfg.teacher.arch, teacher_path, data.num_classes, data.channels).to(device)
    memory_format = torch.channels_last if (device.type == "cuda" and cfg.train.channels_last) else None
    if memory_format is not None:
        student = student.to(memory_format=memory_format)
        if teacher is not None:
            teacher = teacher.to(memory_format=memory_format)

    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    init_generator = torch.Generator().manual_seed(cfg.seed + 1)
    method: Method = build_method(
        cfg.method,
        student.feat_dim,
        teacher.feat_dim if teacher is not None else None,
        data.train_y,
        data.num_classes,
        init_generator,
    ).to(device)
    if hasattr(method, "generator"):
        method.generator = generator
    if cfg.method.name.startswith("crd"):
        largest_class = int(torch.bincount(data.train_y).max())
        if cfg.method.crd_negatives > n_train - largest_class:
            raise TrainError(
                f"method.crd_negatives ({cfg.method.crd_negatives}) exceeds the samples of other classes "
                f"({n_train - largest_class}): lower method.crd_negatives"
            )

    params = [p for p in list(student.parameters()) + list(method.parameters()) if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay
    )
    batches = Batches(n_train, cfg.train.batch_size, device, generator)
    total_steps = batches.per_epoch * cfg.train.epochs

    # -- teacher preflight --------------------------------------------------------------------
    teacher_probe = None
    if teacher is not None:
        t_acc, t_loss = evaluate(teacher, data, augment, cfg.train.eval_batch_size, device, amp)
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
        teacher_probe = probe_outputs(teacher, probe_x, amp)

    # -- state: fresh or resumed --------------------------------------------------------------
    epoch, start_batch, step, best_acc = 0, 0, 0, -1.0
    perm = None
    if resume_state is not None:
        state = resume_state
        student.load_state_dict(state["model"])
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        epoch, start_batch, step, best_acc = state["epoch"], state["batch"], state["step"], state["best_acc"]
        perm = state["perm"].to(device) if state.get("perm") is not None else None
        reporter.event("info", f"resumed from epoch {epoch}, step {step}")
        log.info("resumed from epoch %d, step %d", epoch, step)

    def save(next_epoch: int, next_batch: int, current_perm: torch.Tensor | None) -> None:
        reporter.flush()  # every metric up to `step` is stored before the checkpoint that follows it
        checkpoint.save_atomic(
            {
                "model": student.state_dict(),
                "method": method.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "epoch": next_epoch,
                "batch": next_batch,
                "perm": current_perm.cpu() if current_perm is not None else None,
                "step": step,
                "best_acc": best_acc,
                "arch": cfg.student.arch,
                "num_classes": data.num_classes,
                "config": cfg.to_dict(),
            },
            last_path,
        )

    reporter.progress(total_steps=total_steps, epoch=epoch, step=step)
    student.train()
    log.info(
        "training %s (%s) on %s, %d epochs of %d steps, device %s",
        cfg.student.arch, cfg.method.name, cfg.data.name, cfg.train.epochs, batches.per_epoch, device,
    )  # fmt: skip

    # Device-side accumulators, read every log_every steps (one synchronisation per interval).
    names = ["loss"] + [f"loss_{k}" for k in method.weights]
    interval = torch.zeros(len(names) + 1, device=device, dtype=torch.float64)  # terms + correct
    epoch_correct = torch.zeros((), device=device, dtype=torch.float64)
    epoch_seen = 0
    interval_steps, interval_images, interval_start = 0, 0, time.perf_counter()

    def read_interval() -> None:
        nonlocal interval_steps, interval_images, interval_start
        values = interval.tolist()
        elapsed = time.perf_counter() - interval_start
        averages = {f"train/{n}": v / interval_steps for n, v in zip(names, values[:-1])}
        bad = [n for n, v in averages.items() if not math.isfinite(v)]
        if bad:
            raise Diverged(f"{bad[0]} became {averages[bad[0]]} by step {step}")
        averages["train/acc"] = values[-1] / interval_images * 100
        averages["train/lr"] = optimizer.param_groups[0]["lr"]
        averages["train/throughput"] = interval_images / max(elapsed, 1e-9)
        reporter.log(step, step / batches.per_epoch, averages)
        reporter.progress(step=step)
        interval.zero_()
        interval_steps, interval_images, interval_start = 0, 0, time.perf_counter()

    stopping = False
    val_acc = None
    while epoch < cfg.train.epochs and not stopping:
        lr = learning_rate(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if perm is None:
            perm = batches.permutation()
            start_batch = 0
            epoch_correct.zero_()
            epoch_seen = 0
        for i in range(start_batch, batches.per_epoch):
            index = batches.slice(perm, i)
            x = augment.train(data.train_x[index], generator)
            if memory_format is not None:
                x = x.contiguous(memory_format=memory_format)
            y = data.train_y[index]
            with amp():
                s_feat, s_logits = student.forward_with_features(x)
                t_feat = t_logits = None
                if teacher is not None:
                    with torch.no_grad():
                        t_feat, t_logits = teacher.forward_with_features(x)
                terms = method.terms(Forward(s_feat, s_logits, t_feat, t_logits, y, index))
                loss = sum(method.weights[k] * v for k, v in terms.items())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            method.after_step()
            step += 1

            correct = (s_logits.detach().argmax(1) == y).sum()
            interval += torch.stack([loss.detach().double()] + [terms[k].detach().double() for k in method.weights] + [correct.double()])
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
                if interval_steps:
                    read_interval()
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
        val_acc, val_loss = evaluate(student, data, augment, cfg.train.eval_batch_size, device, amp)
        values = {"val/acc": val_acc, "val/loss": val_loss, "train/epoch_acc": float(epoch_correct) / max(epoch_seen, 1) * 100}
        if teacher_probe is not None:
            s_feat, s_logits = probe_outputs(student, probe_x, amp)
            t_feat, t_logits = teacher_probe
            stats = similarity_stats(s_feat, s_logits, t_feat, t_logits, probe_y, data.num_classes)
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
            stopping = True
            reporter.event("info", f"stopped after epoch {epoch}; resumable")

    if stopping:
        return Outcome("stopped", {"best_acc": best_acc})

    if val_acc is None:  # resumed after the last epoch's checkpoint: nothing left to train
        val_acc, _ = evaluate(student, data, augment, cfg.train.eval_batch_size, device, amp)
    final = {"val_acc": val_acc, "best_acc": best_acc}
    if teacher_probe is not None:
        s_feat, s_logits = probe_outputs(student, probe_x, amp)
        diff = logit_correlation_difference(s_logits, teacher_probe[1], probe_y, data.num_classes)
        present = torch.nonzero(torch.bincount(probe_y, minlength=data.num_classes) > 0).flatten().tolist()
        reporter.artifact(
            "logit_corr_diff", {"classes": present, "matrix": [[round(v, 5) for v in row] for row in diff.tolist()]}
        )
    return Outcome("completed", final)
