"""Training throughput: our step against a reference-style loop, on synthetic data of a preset's shape.

    python -m rrdtui.train.bench PRESET [--device cpu|cuda] [--steps N] [--warmup N] [--json]
                                        [--set key=value ...] [--flops] [--ref-workers N]
                                        [--threads N] [--rounds N] [--no-reference]
                                        [--compile-mode default|reduce-overhead]

Both loops train the same models (the preset's student, and a teacher of the preset's teacher
architecture with random weights) with the same Method module, on the same uint8 images:

- ours: `loop.build` + `MemorySource.epoch` batches (the data set on the device, cropped, flipped
  and normalised there) + the loop's step (`loop.train_step`, or its CUDA graph with
  `--set train.cuda_graphs=true`), with the loop's device-side accumulators; bf16 autocast (CUDA),
  the teacher in `train.teacher_dtype`, and channels_last (CUDA and CPU) as the loop uses them; no
  host synchronisation inside the timed window.
- reference: what RepDistiller's train_student.py does: a torch DataLoader over PIL images with
  torchvision's RandomCrop(padding=4), RandomHorizontalFlip, ToTensor and Normalize, 8 workers on a
  GPU, fp32, no channels_last, cudnn.benchmark on, and `loss.item()` after every step.

Warm-up steps are excluded; the timed steps run in alternating windows (ours, reference, ours, ...;
5 rounds on the CPU, where other processes' load comes and goes, 1 on CUDA), and the device is
synchronised only at the start and end of each window. Both loops share one process, so one torch
thread count and one OpenMP wait policy (passive by default here, see below). Also reported: the
projected time of the preset's full run at our speed (its real data set's size), peak memory, the
time of `rrd_loss` alone at the preset's queue size and batch, and with --flops the multiply-adds of
one step counted by forward hooks and the arithmetic ceiling. --no-reference times ours alone (the
GPU check's comparisons of step modes); --compile-mode reduce-overhead is train.compile with
torch.compile's reduce-overhead mode (its CUDA graphs of the compiled models).

Errors a user can fix print one line `rrdtui: error: ...` on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

if __name__ == "__main__":
    # On a shared machine, OpenMP threads that spin while they wait for each other (libgomp's
    # default) make every CPU step several times slower once other processes hold the cores; both
    # loops run under the same policy. Set before torch loads libgomp; an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn as nn
import torch.nn.functional as F

from rrdtui.config import Config, ConfigError, load_preset
from rrdtui.losses import rrd_loss
from rrdtui.train import datasets
from rrdtui.train.data import DataError, InMemoryData, load_data
from rrdtui.registry import method_info
from rrdtui.train.graphs import make_step
from rrdtui.train.loop import Setup, TrainError, build, forward_batch, pick_device
from rrdtui.train.models import build_model
from rrdtui.train.sources import batches_per_epoch

# Training-set sizes of the real data sets (a full run's steps per epoch come from these).
REAL_TRAIN_SIZE = {
    "cifar100": 50_000, "cifar10": 50_000, "fashion_mnist": 60_000, "stl10": 5_000, "tiny_imagenet": 100_000,
}  # fmt: skip
# Channels, classes, normalisation of each in-memory data set; the image size is data.image_size
# for the resized ones (STL-10, Tiny ImageNet).
SHAPES = {
    "cifar100": (3, 32, 100, datasets.CIFAR100_MEAN, datasets.CIFAR100_STD),
    "cifar10": (3, 32, 10, datasets.CIFAR10_MEAN, datasets.CIFAR10_STD),
    "fashion_mnist": (1, 28, 10, datasets.FASHION_MEAN, datasets.FASHION_STD),
    "stl10": (3, None, 10, datasets.IMAGENET_MEAN, datasets.IMAGENET_STD),
    "tiny_imagenet": (3, None, 200, datasets.IMAGENET_MEAN, datasets.IMAGENET_STD),
}
# Dense bf16 tensor throughputs for the arithmetic ceiling (FLOP/s): ~790 T as the issue's working
# figure for an H100, ~990 T the H100 SXM data-sheet peak.
PEAK_BF16_FLOPS = {"790tflops": 790e12, "990tflops": 990e12}


class BenchError(Exception):
    """A benchmark that cannot run for a reason the user can fix (one line)."""


# ---------------------------------------------------------------------------------------------
# Data and teacher of the preset's shape
# ---------------------------------------------------------------------------------------------


def real_train_size(cfg: Config) -> int:
    """Training images of a full run of cfg: the real data set's size, cut to data.train_limit."""
    if cfg.data.name == "synthetic":
        n = cfg.data.train_size
    elif cfg.data.name in REAL_TRAIN_SIZE:
        n = REAL_TRAIN_SIZE[cfg.data.name]
    else:
        raise BenchError(
            f"data.name '{cfg.data.name}' streams from disk: the benchmark measures in-memory data sets "
            "(synthetic, cifar10, cifar100, fashion_mnist, stl10, tiny_imagenet)"
        )
    return min(n, cfg.data.train_limit) if cfg.data.train_limit is not None else n


def bench_train_size(cfg: Config, num_classes: int) -> int:
    """A few thousand images, more when the method's memory needs them (RRD's queue, CRD's negatives)."""
    n = max(4096, 2 * cfg.train.batch_size)
    family = method_info(cfg.method.name).losses
    if "rrd" in family:
        n = max(n, cfg.method.queue_size)
    if "crd" in family:
        # Balanced labels: the largest class holds ceil(n / C) images, the rest must hold the negatives.
        while n - math.ceil(n / num_classes) < cfg.method.crd_negatives:
            n += cfg.train.batch_size
    return n


def random_data(cfg: Config, n_train: int, n_val: int = 256, seed: int = 0) -> InMemoryData:
    """Random uint8 images of the preset's data set's shape, with its real mean/std (speed only)."""
    channels, size, classes, mean, std = SHAPES[cfg.data.name]
    size = size or cfg.data.image_size
    gen = torch.Generator().manual_seed(seed)

    def labels(n: int) -> torch.Tensor:  # balanced, shuffled
        return (torch.arange(n) % classes)[torch.randperm(n, generator=gen)]

    return InMemoryData(
        name=f"random-{cfg.data.name}",
        train_x=torch.randint(0, 256, (n_train, channels, size, size), dtype=torch.uint8, generator=gen),
        train_y=labels(n_train),
        val_x=torch.randint(0, 256, (n_val, channels, size, size), dtype=torch.uint8, generator=gen),
        val_y=labels(n_val),
        num_classes=classes,
        mean=mean,
        std=std,
        augment="crop_flip",
    )


def bench_data(cfg: Config) -> InMemoryData:
    """The synthetic data set itself for synthetic presets, random images of the right shape otherwise."""
    real_train_size(cfg)  # refuses streaming data sets
    if cfg.data.name == "synthetic":
        return load_data(cfg.data)
    return random_data(cfg, bench_train_size(cfg, SHAPES[cfg.data.name][2]))


def teacher_arch(cfg: Config) -> str:
    """teacher.arch, else the student arch of teacher.preset."""
    if cfg.teacher.arch:
        return cfg.teacher.arch
    if cfg.teacher.preset:
        return load_preset(cfg.teacher.preset).student.arch
    raise BenchError("the preset names its teacher by run only: add --set teacher.arch=ARCH")


def write_random_teacher(cfg: Config, data: InMemoryData, folder: Path) -> str:
    """A teacher of the preset's architecture with random weights, saved as a state dict."""
    torch.manual_seed(cfg.seed + 1000)
    model = build_model(teacher_arch(cfg), data.num_classes, in_channels=data.channels)
    path = folder / "random_teacher.pt"
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def bench_inputs(cfg: Config, folder: Path) -> tuple[InMemoryData, str | None]:
    """The benchmark's data and, when the method distils, a random teacher saved in folder; sets
    cfg.teacher.arch, what build's load_teacher reads (the launcher sets it the same way)."""
    data = bench_data(cfg)
    cfg.teacher.arch = teacher_arch(cfg) if cfg.distills else None
    return data, (write_random_teacher(cfg, data, folder) if cfg.distills else None)


def use_compile_mode(cfg: Config, mode: str | None) -> None:
    """train.compile in torch.compile's `mode`: reduce-overhead is the default mode plus inductor's
    CUDA graphs (what torch.compile(mode="reduce-overhead") sets), which the loop's compile takes
    from inductor's configuration."""
    if mode is None:
        return
    if mode not in ("default", "reduce-overhead"):
        raise BenchError(f"--compile-mode must be default or reduce-overhead, got '{mode}'")
    cfg.train.compile = True
    if mode == "reduce-overhead":
        import torch._inductor.config as inductor_config

        inductor_config.triton.cudagraphs = True


# ---------------------------------------------------------------------------------------------
# Ours: the loop's build + MemorySource batches + train_step
# ---------------------------------------------------------------------------------------------


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FastLoop:
    """Our training loop's per-step work: a MemorySource batch, the loop's step, the device accumulators."""

    def __init__(self, setup: Setup):
        self.setup = setup
        self.batches = self._batches()
        self.weights = list(setup.method.weights)
        self.interval = torch.zeros(len(self.weights) + 2, device=setup.device, dtype=torch.float64)
        self.train_step = make_step(setup)  # train_step, or its CUDA graph (train.cuda_graphs)
        # Inductor's CUDA graphs (reduce-overhead) reuse their output memory: each step is a new one.
        self.mark_steps = setup.cfg.train.compile and bool(_inductor_cudagraphs())
        setup.train_mode()

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The loop's batches, epoch after epoch: a device permutation, then MemorySource.epoch."""
        while True:
            perm = self.setup.source.permutation(self.setup.generator)
            yield from self.setup.source.epoch(perm, 0, self.setup.generator)

    def step(self) -> int:
        x, y, index = next(self.batches)
        if self.mark_steps:
            torch.compiler.cudagraph_mark_step_begin()
        loss, terms, correct = self.train_step(self.setup, x, y, index)
        parts = [loss.detach().double()] + [terms[k].detach().double() for k in self.weights] + [correct.double()]
        self.interval.add_(torch.stack(parts))
        return index.shape[0]


def _inductor_cudagraphs() -> bool:
    import torch._inductor.config as inductor_config

    return inductor_config.triton.cudagraphs


# ---------------------------------------------------------------------------------------------
# The reference: RepDistiller-style DataLoader over PIL images, fp32, .item() every step
# ---------------------------------------------------------------------------------------------


class PILImages(torch.utils.data.Dataset):
    """uint8 images kept as a numpy array and turned into PIL images per item, as torchvision's CIFAR
    data sets do; items are (image, label, index), as RepDistiller's CIFAR100Instance."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        array = x.permute(0, 2, 3, 1).contiguous().numpy()  # N x H x W x C
        self.images = array[..., 0] if array.shape[-1] == 1 else array
        self.targets = y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.targets[i], i


def reference_transform(data: InMemoryData, padding: int = 4):
    import torchvision.transforms as T

    steps = []
    if data.augment == "crop_flip":
        steps.append(T.RandomCrop(data.image_size, padding=padding))
    if data.augment in ("crop_flip", "flip"):
        steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + [T.ToTensor(), T.Normalize(data.mean, data.std)])


def reference_loader(
    data: InMemoryData, batch_size: int, workers: int, num_samples: int, seed: int
) -> torch.utils.data.DataLoader:
    """Shuffled batches of PIL-transformed images. One iterator serves every step (num_samples may
    span several epochs), so worker start-up is paid once, in the warm-up, not once per short epoch."""
    dataset = PILImages(data.train_x.cpu(), data.train_y.cpu(), reference_transform(data))
    sampler = torch.utils.data.RandomSampler(
        dataset, num_samples=num_samples, generator=torch.Generator().manual_seed(seed)
    )
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)


def reference_setup(cfg: Config, teacher_path: str | None, data: InMemoryData, device: torch.device) -> Setup:
    """The same models, Method and optimiser as ours (built by the same code), without our speed-ups."""
    plain = dataclasses.replace(
        cfg.train, amp="off", channels_last=False, compile=False, teacher_dtype="fp32", cuda_graphs=False
    )
    return build(dataclasses.replace(cfg, train=plain), teacher_path, data, device)


def reference_step(setup: Setup, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> tuple[float, torch.Tensor]:
    """One step as RepDistiller's train_distill runs it; returns (loss.item(), correct on the device)."""
    x, y, index = x.to(setup.device), y.to(setup.device), index.to(setup.device)
    out = forward_batch(setup, x, y, index, 0, 0)  # the same forward as ours: what the method needs
    s_logits = out.student_logits
    terms = setup.method.terms(out)
    loss = sum(setup.method.weights[k] * v for k, v in terms.items())
    setup.optimizer.zero_grad()
    loss.backward()
    setup.optimizer.step()
    setup.method.after_step()
    return loss.item(), (s_logits.detach().argmax(1) == y).sum()


class ReferenceLoop:
    """The reference loop's per-step work: a DataLoader batch, reference_step (with its .item())."""

    def __init__(self, setup: Setup, data: InMemoryData, workers: int, total_steps: int):
        self.setup = setup
        batch = setup.cfg.train.batch_size
        self.batches = iter(reference_loader(data, batch, workers, total_steps * batch, setup.cfg.seed))
        self.correct = torch.zeros((), device=setup.device)
        self.losses: list[float] = []
        setup.train_mode()

    def step(self) -> int:
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True  # RepDistiller sets it
        try:
            x, y, index = next(self.batches)
            loss, correct = reference_step(self.setup, x, y, index)
        finally:
            torch.backends.cudnn.benchmark = benchmark
        self.losses.append(loss)
        self.correct.add_(correct)
        return index.shape[0]

    def close(self) -> None:
        del self.batches  # stops the workers


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def warm_up(loop, device: torch.device, steps: int) -> None:
    for _ in range(steps):
        loop.step()
    synchronise(device)


def timed_rounds(loops: dict, device: torch.device, steps: int, rounds: int) -> dict[str, float]:
    """Images per second of each (warmed-up) loop over `steps` steps, run in `rounds` alternating
    windows so that a busy machine's background load falls on every loop alike. The device is
    synchronised at the edges of each window only."""
    chunks = [steps // rounds + (1 if r < steps % rounds else 0) for r in range(rounds)]
    images = dict.fromkeys(loops, 0)
    seconds = dict.fromkeys(loops, 0.0)
    for chunk in chunks:
        for name, loop in loops.items():
            synchronise(device)
            start = time.perf_counter()
            for _ in range(chunk):
                images[name] += loop.step()
            synchronise(device)
            seconds[name] += time.perf_counter() - start
    return {name: images[name] / seconds[name] for name in loops}


def timed_for(loop, device: torch.device, seconds: float) -> tuple[int, float]:
    """(images, seconds) of one warmed-up loop that issues steps for `seconds` of wall time, then lets
    the device finish them: trainers packed on one GPU, each timed over the same window."""
    synchronise(device)
    start = time.perf_counter()
    images = 0
    while time.perf_counter() - start < seconds:
        images += loop.step()
    synchronise(device)
    return images, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# rrd_loss alone, FLOPs
# ---------------------------------------------------------------------------------------------


def measure_rrd_loss(cfg: Config, device: torch.device, repeats: int = 20) -> float:
    """Milliseconds of one rrd_loss forward + backward at the preset's queue size, batch and feat_dim."""
    gen = torch.Generator().manual_seed(0)
    b, d, k = cfg.train.batch_size, cfg.method.feat_dim, cfg.method.queue_size
    s = F.normalize(torch.randn(b, d, generator=gen), dim=1).to(device).requires_grad_()
    t = F.normalize(torch.randn(b, d, generator=gen), dim=1).to(device)
    queue = F.normalize(torch.randn(k, d, generator=gen), dim=1).to(device)

    def step() -> None:
        rrd_loss(s, t, queue, cfg.method.tau_s, cfg.method.tau_t).backward()

    for _ in range(3):
        step()
    synchronise(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronise(device)
    return (time.perf_counter() - start) / repeats * 1000


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of one forward pass of model on x, counted over its Conv2d and Linear layers."""
    total = 0

    def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        else:  # Linear
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


def step_flops(cfg: Config, data: InMemoryData, teacher: str | None) -> dict[str, float]:
    """FLOPs (2 x multiply-adds) of one training step at the preset's batch size.

    Student: forward + backward ~ 3 x forward. Teacher: forward only. The method's heads are Linear
    layers (counted the same way) and RRD adds its B x K x d relation products: teacher and student
    forward, and the student's backward to its embedding (the queue carries no gradient).
    """
    b = cfg.train.batch_size
    x = torch.zeros(b, data.channels, data.image_size, data.image_size)
    student = build_model(cfg.student.arch, data.num_classes, in_channels=data.channels)
    student_fwd = 2 * count_macs(student, x)
    teacher_fwd = 0
    method = 0
    if teacher is not None:
        t_model = build_model(teacher, data.num_classes, in_channels=data.channels)
        teacher_fwd = 2 * count_macs(t_model, x)
        own = method_info(cfg.method.name).losses
        if own in (("rrd",), ("crd",)):  # the embedding heads and the memory; other methods are not counted
            d = cfg.method.feat_dim
            heads = 3 * b * student.feat_dim * d + b * t_model.feat_dim * d
            k = cfg.method.queue_size if own == ("rrd",) else 2 * (cfg.method.crd_negatives + 1)
            method = 2 * (heads + 3 * b * k * d)
    total = 3 * student_fwd + teacher_fwd + method
    return {
        "student_fwd_flops": float(student_fwd),
        "teacher_fwd_flops": float(teacher_fwd),
        "method_flops": float(method),
        "step_flops": float(total),
        "flops_per_image": total / b,
    }


# ---------------------------------------------------------------------------------------------
# Peak memory, the whole benchmark
# ---------------------------------------------------------------------------------------------


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated, our loop"
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024
    return rss * scale / 2**20, "peak RSS of the process after our warm-up, resource.getrusage"


@dataclass
class Options:
    preset: str
    device: str | None = None
    steps: int = 50
    warmup: int = 5
    overrides: tuple[str, ...] = ()
    flops: bool = False
    ref_workers: int | None = None  # default: 8 on CUDA (RepDistiller's), 0 on the CPU
    threads: int | None = None  # torch threads for both loops; default torch's own
    rounds: int | None = None  # alternating timed windows; default 5 on the CPU, 1 on CUDA
    reference: bool = True  # time the reference loop too (False: ours alone, no ratio)
    compile_mode: str | None = None  # default or reduce-overhead: train.compile in that mode


def run(opts: Options) -> dict:
    """Measure both loops; return the results as a flat dict (the --json line)."""
    if opts.steps < 1 or opts.warmup < 1:
        raise BenchError("--steps and --warmup must be at least 1")
    for name in ("ref_workers", "threads", "rounds"):
        value = getattr(opts, name)
        if value is not None and value < (0 if name == "ref_workers" else 1):
            raise BenchError(f"--{name.replace('_', '-')} must be at least {0 if name == 'ref_workers' else 1}")
    cfg = load_preset(opts.preset, list(opts.overrides))
    use_compile_mode(cfg, opts.compile_mode)
    if opts.device and opts.device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"--device {opts.device} but no CUDA device is available: use --device cpu")
    device = pick_device(opts.device or cfg.train.device)
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    workers = opts.ref_workers if opts.ref_workers is not None else (8 if device.type == "cuda" else 0)
    rounds = min(opts.steps, opts.rounds or (1 if device.type == "cuda" else 5))
    tmp = tempfile.TemporaryDirectory(prefix="rrdtui-bench-")
    data, teacher_path = bench_inputs(cfg, Path(tmp.name))
    teacher = cfg.teacher.arch
    images_cpu = dataclasses.replace(data)  # the CPU tensors, for the reference loader (build moves data's)
    result: dict = {
        "preset": opts.preset,
        "method": cfg.method.name,
        "student": cfg.student.arch,
        "teacher": teacher,
        "data": cfg.data.name,
        "bench_images": int(data.train_x.shape[0]),
        "batch_size": cfg.train.batch_size,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform_cpu(),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch": torch.__version__,
        "steps": opts.steps,
        "warmup": opts.warmup,
        "rounds": rounds,
        "compile": cfg.train.compile,
        "compile_mode": (opts.compile_mode or "default") if cfg.train.compile else None,
        "teacher_dtype": cfg.train.teacher_dtype if teacher else None,
        "reference_workers": workers if opts.reference else None,
    }
    with tmp:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        setup = build(cfg, teacher_path, data, device)
        result["amp"] = "bf16" if setup.use_bf16 else "fp32"
        result["channels_last"] = setup.memory_format is not None
        fast = FastLoop(setup)
        warm_up(fast, device, opts.warmup)
        result["peak_mem_mb"], result["peak_mem_kind"] = peak_memory_mb(device)
        loops = {"fast": fast}
        if opts.reference:
            ref_setup = reference_setup(cfg, teacher_path, dataclasses.replace(images_cpu), device)
            loops["reference"] = ReferenceLoop(ref_setup, images_cpu, workers, opts.warmup + opts.steps)
            warm_up(loops["reference"], device, opts.warmup)
        try:
            rates = timed_rounds(loops, device, opts.steps, rounds)
        finally:
            if opts.reference:
                loops["reference"].close()
        # After the timed steps: the graph is captured (or given up) during the warm-up.
        result["cuda_graphs"] = getattr(fast.train_step, "status", "off")

    real_n = real_train_size(cfg)
    full_steps = cfg.train.epochs * batches_per_epoch(real_n, cfg.train.batch_size)
    step_s = cfg.train.batch_size / rates["fast"]
    rrd_ms = measure_rrd_loss(cfg, device)
    result.update(
        fast_img_s=rates["fast"],
        reference_img_s=rates.get("reference"),
        ratio=rates["fast"] / rates["reference"] if opts.reference else None,
        real_train_images=real_n,
        full_run_steps=full_steps,
        full_run_s=full_steps * step_s,
        step_ms=step_s * 1000,
        rrd_loss_ms=rrd_ms,
        rrd_loss_share=rrd_ms / (step_s * 1000),
        rrd_in_step="rrd" in method_info(cfg.method.name).losses,
        queue_size=cfg.method.queue_size,
    )
    if opts.flops:
        flops = step_flops(cfg, data, teacher)
        result.update(flops)
        for name, peak in PEAK_BF16_FLOPS.items():
            result[f"ceiling_img_s_{name}"] = peak / flops["flops_per_image"]
        result["achieved_tflop_s"] = rates["fast"] * flops["flops_per_image"] / 1e12
    result["loadavg"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return result


def platform_cpu() -> str:
    """The CPU model from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


def report(r: dict) -> str:
    """The human-readable summary."""
    pair = f"{r['teacher']} -> {r['student']}" if r["teacher"] else r["student"]
    lines = [
        f"rrdtui bench {r['preset']}: {r['method']}, {pair}, batch {r['batch_size']}, "
        f"device {r['device']} ({r['device_name']}, {r['threads']} threads), torch {r['torch']}",
        f"data: {r['bench_images']} {r['data']}-shaped images in memory; per loop {r['warmup']} warm-up steps, "
        f"then {r['steps']} timed steps in {r['rounds']} alternating round(s)",
        f"  ours        {r['fast_img_s']:10.1f} img/s   (in-memory uint8 on the device, {r['amp']}, "
        f"channels_last {'on' if r['channels_last'] else 'off'}, compile {r['compile_mode'] or 'off'}, "
        f"CUDA graphs {r['cuda_graphs']}" + (f", teacher {r['teacher_dtype']})" if r["teacher"] else ")"),
    ]
    if r["reference_img_s"] is not None:
        lines += [
            f"  reference   {r['reference_img_s']:10.1f} img/s   (DataLoader, {r['reference_workers']} workers, "
            "PIL + torchvision transforms, fp32, loss.item() every step)",
            f"  ratio       {r['ratio']:10.2f}x",
        ]
    lines += [
        f"  full run    {r['full_run_s']:10.1f} s       ({r['full_run_steps']} steps: epochs x "
        f"{r['real_train_images']} real training images / batch, at our speed)",
        f"  peak memory {r['peak_mem_mb']:10.1f} MB      ({r['peak_mem_kind']})",
        f"  rrd_loss    {r['rrd_loss_ms']:10.3f} ms      (forward + backward, queue {r['queue_size']}): "
        f"{r['rrd_loss_share'] * 100:.1f}% of our {r['step_ms']:.1f} ms step"
        + ("" if r["rrd_in_step"] else " (this method does not use it)"),
    ]
    if "step_flops" in r:
        lines += [
            f"  FLOPs/step  {r['step_flops'] / 1e9:10.2f} G      "
            f"(student fwd {r['student_fwd_flops'] / 1e9:.2f} G x 3, "
            f"teacher fwd {r['teacher_fwd_flops'] / 1e9:.2f} G, method {r['method_flops'] / 1e9:.3f} G)",
            f"  ceiling     {r['ceiling_img_s_790tflops']:10.0f} img/s at 790 TFLOP/s bf16, "
            f"{r['ceiling_img_s_990tflops']:.0f} at 990; ours reaches {r['achieved_tflop_s']:.3f} TFLOP/s",
        ]
    if r.get("loadavg") is not None:
        lines.append(f"  load average {r['loadavg']:.2f} at the end")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[Options, bool]:
    parser = argparse.ArgumentParser(prog="python -m rrdtui.train.bench", description=__doc__.split("\n")[0])
    parser.add_argument("preset")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: the preset's train.device)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per loop (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each loop (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--flops", action="store_true", help="count the step's FLOPs and the arithmetic ceiling")
    parser.add_argument("--ref-workers", type=int, help="reference DataLoader workers (default 8 on CUDA, 0 on CPU)")
    parser.add_argument("--threads", type=int, help="torch threads for both loops (default: torch's)")
    parser.add_argument("--rounds", type=int, help="alternating timed windows (default 5 on CPU, 1 on CUDA)")
    parser.add_argument("--no-reference", dest="reference", action="store_false", help="time our loop alone")
    parser.add_argument("--compile-mode", choices=("default", "reduce-overhead"), help="train.compile in this mode")
    args = parser.parse_args(argv)
    opts = Options(
        args.preset, args.device, args.steps, args.warmup, tuple(args.overrides), args.flops,
        args.ref_workers, args.threads, args.rounds, args.reference, args.compile_mode,
    )  # fmt: skip
    return opts, args.json


def main(argv: list[str] | None = None) -> int:
    opts, as_json = parse_args(argv)
    try:
        result = run(opts)
    except (ConfigError, TrainError, DataError, BenchError) as exc:
        print(f"rrdtui: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(json.dumps(result) if as_json else report(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
