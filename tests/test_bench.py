"""The training benchmark and what it compares: our device-side augmentation against torchvision's,
our step against the reference step, both loops end to end, train.compile, and `rrdtui bench`."""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rrdtui.cli import app
from rrdtui.config import from_mapping
from rrdtui.train import bench
from rrdtui.train.data import BatchAugment, InMemoryData
from rrdtui.train.loop import build, evaluate, learning_rate, train_step

from conftest import TINY_DATA, TINY_TRAIN, write_preset

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a shared 2-core machine, two OpenMP threads that spin-wait are several
    times slower than one (BENCHMARKS.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# Augmentation: the same distribution of crops and flips as torchvision
# ---------------------------------------------------------------------------------------------

SIZE, PAD = 32, 4
OFFSETS = 2 * PAD + 1  # 9 offsets per axis, 81 crops


def position_image() -> torch.Tensor:
    """3 x 32 x 32 uint8: channel 0 holds row + 1, channel 1 col + 1, channel 2 a constant 200, so
    that a crop's offset and flip can be read back and padding (0 everywhere) told apart."""
    rows = torch.arange(1, SIZE + 1).view(-1, 1).expand(SIZE, SIZE)
    cols = torch.arange(1, SIZE + 1).view(1, -1).expand(SIZE, SIZE)
    return torch.stack([rows, cols, torch.full((SIZE, SIZE), 200)]).to(torch.uint8)


def all_crops(image: torch.Tensor) -> torch.Tensor:
    """Every zero-padded crop, unflipped and flipped: (81 * 2) x 3 x 32 x 32, index 2 * (9 dy + dx) + flip."""
    padded = torch.nn.functional.pad(image, (PAD, PAD, PAD, PAD))
    crops = []
    for dy in range(OFFSETS):
        for dx in range(OFFSETS):
            crop = padded[:, dy : dy + SIZE, dx : dx + SIZE]
            crops += [crop, crop.flip(-1)]
    return torch.stack(crops)


def decode(out: torch.Tensor) -> torch.Tensor:
    """The cell 2 * (9 dy + dx) + flip of each augmented image (N x 3 x 32 x 32, integer values)."""
    row = out[:, 0, 16, 16].long() - 1  # the centre pixel is never padding (|offset - 4| <= 4)
    col = out[:, 1, 16, 16].long() - 1
    flip = (out[:, 1, 16, 17].long() - 1 < col).long()
    dy = row - 16 + PAD
    dx = torch.where(flip.bool(), col - 15 + PAD, col - 16 + PAD)  # flipped: output col 16 is crop col 15
    assert ((dy >= 0) & (dy < OFFSETS) & (dx >= 0) & (dx < OFFSETS)).all()
    return 2 * (OFFSETS * dy + dx) + flip


def chi2_critical(dof: int, z: float = 3.09) -> float:
    """Upper critical value of chi-square with `dof` degrees of freedom at one-sided normal quantile z
    (3.09: p = 0.001), by the Wilson-Hilferty approximation."""
    a = 2 / (9 * dof)
    return dof * (1 - a + z * math.sqrt(a)) ** 3


N_AUG = 81 * 2 * 50  # 50 expected per cell


def test_device_augmentation_matches_torchvision_crop_and_flip_distribution():
    import torchvision.transforms as T
    from PIL import Image

    image = position_image()
    table = all_crops(image)

    # Ours: BatchAugment.train on uint8 batches; mean 0 and std 1/255 make normalisation the identity.
    label = torch.zeros(1, dtype=torch.long)
    data = InMemoryData("pos", image[None], label, image[None], label, 1, (0.0,) * 3, (1 / 255,) * 3, "crop_flip")
    augment = BatchAugment(data, CPU)
    gen = torch.Generator().manual_seed(0)
    batch = image[None].expand(N_AUG // 4, -1, -1, -1).contiguous()
    ours = torch.cat([augment.train(batch, gen) for _ in range(4)]).round().to(torch.int64)

    # torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip on a PIL image.
    torch.manual_seed(0)
    transform = T.Compose([T.RandomCrop(SIZE, padding=PAD), T.RandomHorizontalFlip()])
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    theirs = torch.stack([torch.from_numpy(np.array(transform(pil))).permute(2, 0, 1) for _ in range(N_AUG)]).long()

    for name, out in (("ours", ours), ("torchvision", theirs)):
        cells = decode(out)
        # Every output is exactly a zero-padded crop (and flip): padded pixels are 0 in every channel.
        expected = table[cells].long()
        assert torch.equal(out, expected), f"{name}: an output is not a zero-padded crop of the input"
        assert ((out[:, 2] == 0) == (expected[:, 2] == 0)).all()
        padded_share = (out[:, 2] == 0).float().mean().item()
        assert 0.05 < padded_share < 0.3, f"{name}: {padded_share:.3f} of pixels padded"

        # Uniform over the 81 offsets x 2 flips (Pearson chi-square, p = 0.001 bound).
        counts = torch.bincount(cells, minlength=162).double()
        expect = N_AUG / 162
        chi2 = ((counts - expect) ** 2 / expect).sum().item()
        assert chi2 < chi2_critical(161), f"{name}: chi-square {chi2:.1f} over 162 cells"
        # Flips: a fair coin (within 4 standard deviations).
        flips = (cells % 2).double().mean().item()
        assert abs(flips - 0.5) < 4 * math.sqrt(0.25 / N_AUG), f"{name}: flip rate {flips:.3f}"
        # Offsets alone, 81 cells.
        offsets = torch.bincount(cells // 2, minlength=81).double()
        chi2 = ((offsets - N_AUG / 81) ** 2 / (N_AUG / 81)).sum().item()
        assert chi2 < chi2_critical(80), f"{name}: chi-square {chi2:.1f} over the 81 offsets"

    # And the two samples come from one distribution (chi-square test of homogeneity, 161 dof).
    a = torch.bincount(decode(ours), minlength=162).double()
    b = torch.bincount(decode(theirs), minlength=162).double()
    chi2 = ((a - b) ** 2 / (a + b).clamp(min=1)).sum().item()
    assert chi2 < chi2_critical(161), f"homogeneity chi-square {chi2:.1f}"


# ---------------------------------------------------------------------------------------------
# Our step against the reference step; both loops end to end
# ---------------------------------------------------------------------------------------------


def gratings(n: int, seed: int, noise: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """4 classes: horizontal or vertical grating (flip-invariant) x red or green, with pixel noise."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % 4)[torch.randperm(n, generator=g)]
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    freq = 0.15 + 0.1 * torch.rand(n, generator=g)
    phase = torch.rand(n, generator=g) * 2 * math.pi
    vertical = (y % 2).float()[:, None, None]
    u = vertical * xx + (1 - vertical) * yy
    wave = torch.sin(2 * math.pi * freq[:, None, None] * u + phase[:, None, None])
    colour = torch.tensor([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2]])[y // 2]
    img = 0.5 + 0.25 * wave[:, None] * colour[:, :, None, None] + noise * torch.randn(n, 3, 32, 32, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8), y


def grating_data(n_train: int = 384, n_val: int = 256) -> InMemoryData:
    tx, ty = gratings(n_train, 1)
    vx, vy = gratings(n_val, 2)
    return InMemoryData("gratings", tx, ty, vx, vy, 4, (0.5,) * 3, (0.25,) * 3, "crop_flip")


def tiny_config(**method):
    return from_mapping(
        {
            "name": "tiny",
            "data": {"name": "synthetic", "num_classes": 4, "train_size": 384, "val_size": 256},
            "teacher": {"checkpoint": "unused.pt", "arch": "resnet8"} if method else {},
            "student": {"arch": "resnet8"},
            "method": method or {"name": "none"},
            "optim": {"lr": 0.05, "milestones": [3]},
            "train": {"epochs": 4, "batch_size": 32, "device": "cpu"},
        },
        "test",
    )


@pytest.mark.parametrize("channels_last", [False, True], ids=["same-layout", "channels_last"])
def test_our_step_and_the_reference_step_compute_the_same_update(tmp_path, channels_last):
    """Fed the same batches, train_step (with the loop's accumulators on the device) and the reference
    step (fp32 NCHW, .item()) give the same losses and weights: the benchmark compares loops, not
    different maths. In the same memory layout they agree bit for bit; with our channels_last the
    convolutions sum in another order (1e-6 relative in a forward pass), which BatchNorm's backward
    and RRD's sharp softmax (tau_s 0.04) amplify to about 0.1% of an update per step: bounded by 2%
    after 3 steps, where a different loss, gradient or optimiser step would differ by tens of percent."""
    cfg = tiny_config(name="rrd+kd", queue_size=64)
    cfg.train.channels_last = channels_last
    data = grating_data()
    cfg.teacher.arch = "resnet8"
    teacher = bench.write_random_teacher(cfg, data, tmp_path)
    ours = build(cfg, teacher, dataclasses.replace(data), CPU)
    ref = bench.reference_setup(cfg, teacher, dataclasses.replace(data), CPU)
    assert (ours.memory_format == torch.channels_last) == channels_last and ref.memory_format is None
    ours.train_mode()
    ref.train_mode()
    start = torch.cat([p.detach().flatten().clone() for p in ours.student.parameters()])
    gen = torch.Generator().manual_seed(0)
    for step in range(3):
        index = torch.randperm(384, generator=gen)[:32]
        x = ours.source.augment.train(data.train_x[index], gen)
        y = data.train_y[index]
        loss, terms, _ = train_step(ours, x, y, index)
        ref_loss, _ = bench.reference_step(ref, x, y, index)
        assert set(terms) == {"ce", "kd", "rrd"}
        assert loss.item() == pytest.approx(ref_loss, rel=1e-5), step
    ours_update = torch.cat([p.detach().flatten() for p in ours.student.parameters()]) - start
    ref_update = torch.cat([p.detach().flatten() for p in ref.student.parameters()]) - start
    if channels_last:
        assert ((ours_update - ref_update).norm() / ref_update.norm()).item() < 2e-2
        torch.testing.assert_close(ours.method.queue.keys, ref.method.queue.keys, rtol=1e-2, atol=1e-3)
    else:
        assert torch.equal(ours_update, ref_update)
        assert torch.equal(ours.method.queue.keys, ref.method.queue.keys)


def set_lr(setup, cfg, epoch: int) -> None:
    for group in setup.optimizer.param_groups:
        group["lr"] = learning_rate(cfg, epoch)


def test_fast_and_reference_loops_train_to_the_same_accuracy():
    """Both loops train resnet8 for 4 epochs on 384 images. Tolerance: 5 points of validation
    accuracy, and both at least 90%. The two runs draw different shuffles and crops, so they agree
    only in distribution; on this task 8 seeds of each loop all ended at 96.9-100% when this test was
    written, so 5 points is a few times the seed-to-seed spread, while a loop that misaligns labels,
    normalises wrongly or breaks the augmentation stays near 25% (chance). Subtler differences are
    the business of the two tests above (same crop/flip distribution, same update)."""
    cfg = tiny_config()
    data = grating_data()

    ours = build(cfg, None, dataclasses.replace(data), CPU)
    ours.train_mode()
    for epoch in range(cfg.train.epochs):
        set_lr(ours, cfg, epoch)
        for x, y, index in ours.source.epoch(ours.source.permutation(ours.generator), 0, ours.generator):
            train_step(ours, x, y, index)
    fast_acc, _ = evaluate(ours.student, ours)

    ref = bench.reference_setup(cfg, None, dataclasses.replace(data), CPU)
    ref.train_mode()
    for epoch in range(cfg.train.epochs):
        set_lr(ref, cfg, epoch)
        for x, y, index in bench.reference_loader(data, cfg.train.batch_size, 0, 384, seed=epoch):
            bench.reference_step(ref, x, y, index)
    ref_acc, _ = evaluate(ref.student, ref)  # the same validation pass for both

    assert fast_acc >= 90 and ref_acc >= 90, (fast_acc, ref_acc)
    assert abs(fast_acc - ref_acc) <= 5, (fast_acc, ref_acc)


# ---------------------------------------------------------------------------------------------
# train.compile
# ---------------------------------------------------------------------------------------------


def test_compile_wraps_the_step_forward_and_falls_back_to_eager_on_compiler_errors(monkeypatch, caplog):
    import torch._dynamo.exc

    calls = []

    def fake_compile(fn, **kwargs):
        def compiled(x):
            calls.append(x.shape)
            raise torch._dynamo.exc.TorchDynamoException("no C++ compiler")

        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = tiny_config()
    cfg.train.compile = True
    setup = build(cfg, None, grating_data(), CPU)
    keys = list(setup.student.state_dict())
    assert not any(k.startswith("_orig_mod") for k in keys)  # checkpoints keep their keys
    setup.train_mode()
    x, y, index = next(setup.source.epoch(setup.source.permutation(setup.generator), 0, setup.generator))
    with caplog.at_level(logging.WARNING, logger="rrdtui.train"):
        loss, _, _ = train_step(setup, x, y, index)
        train_step(setup, x, y, index)
    assert torch.isfinite(loss)
    assert len(calls) == 1  # tried once, eager from then on
    assert any("did not compile" in r.getMessage() for r in caplog.records)


def test_compile_unsupported_on_the_platform_trains_uncompiled(monkeypatch, caplog):
    def fake_compile(fn, **kwargs):
        raise RuntimeError("torch.compile is not supported on this Python")

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = tiny_config()
    cfg.train.compile = True
    with caplog.at_level(logging.WARNING, logger="rrdtui.train"):
        setup = build(cfg, None, grating_data(), CPU)
    assert any("did not compile" in r.getMessage() for r in caplog.records)
    x, y, index = next(setup.source.epoch(setup.source.permutation(setup.generator), 0, setup.generator))
    loss, _, _ = train_step(setup, x, y, index)
    assert torch.isfinite(loss)


def test_compile_lets_other_errors_through(monkeypatch):
    def fake_compile(fn, **kwargs):
        def compiled(x):
            raise ValueError("a real bug")

        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = tiny_config()
    cfg.train.compile = True
    setup = build(cfg, None, grating_data(), CPU)
    x, y, index = next(setup.source.epoch(setup.source.permutation(setup.generator), 0, setup.generator))
    with pytest.raises(ValueError, match="a real bug"):
        train_step(setup, x, y, index)


# ---------------------------------------------------------------------------------------------
# The benchmark's pieces and the command
# ---------------------------------------------------------------------------------------------


def test_flop_counter_counts_convolutions_and_linear_layers():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 10))
    macs = bench.count_macs(net, torch.zeros(2, 3, 4, 4))
    assert macs == 2 * (8 * 4 * 4) * 3 * 3 * 3 + 2 * 10 * 128


def test_real_sizes_and_shapes_of_the_presets_data_sets():
    cfg = tiny_config()
    assert bench.real_train_size(cfg) == 384
    cfg.data.name = "cifar100"
    assert bench.real_train_size(cfg) == 50_000
    data = bench.random_data(cfg, 512)
    assert data.train_x.shape == (512, 3, 32, 32) and data.num_classes == 100 and data.train_x.dtype == torch.uint8
    cfg.data.name, cfg.data.train_limit = "fashion_mnist", 10_000
    assert bench.real_train_size(cfg) == 10_000
    assert bench.random_data(cfg, 256).train_x.shape == (256, 1, 28, 28)
    cfg.data.name = "imagenet"
    with pytest.raises(bench.BenchError, match="streams from disk"):
        bench.real_train_size(cfg)


REQUIRED = {"fast_img_s", "reference_img_s", "ratio", "full_run_s", "peak_mem_mb", "device", "preset", "method",
            "steps", "rrd_loss_ms", "rrd_loss_share"}  # fmt: skip


def test_rrdtui_bench_prints_one_json_line(tmp_path):
    folder = tmp_path / "presets"
    folder.mkdir()
    write_preset(folder, "tiny_teacher", data=TINY_DATA, student={"arch": "resnet14"}, method={"name": "none"},
                 optim={"lr": 0.05, "milestones": [1]}, train=TINY_TRAIN)
    student = write_preset(folder, "tiny_student", data=TINY_DATA, teacher={"preset": "tiny_teacher.yaml"},
                           student={"arch": "resnet8"}, method={"name": "rrd+kd", "queue_size": 100},
                           optim={"lr": 0.05, "milestones": [1]}, train=TINY_TRAIN)
    args = ["bench", str(student), "--device", "cpu", "--steps", "3", "--warmup", "1", "--json"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout
    row = json.loads(lines[0])
    assert REQUIRED <= set(row), REQUIRED - set(row)
    assert row["device"] == "cpu" and row["method"] == "rrd+kd" and row["steps"] == 3
    assert row["teacher"] == "resnet14" and row["student"] == "resnet8"
    assert row["fast_img_s"] > 0 and row["reference_img_s"] > 0 and row["full_run_s"] > 0
    assert row["ratio"] == pytest.approx(row["fast_img_s"] / row["reference_img_s"])


def test_rrdtui_bench_refuses_a_bad_preset_in_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["bench", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("rrdtui: error: ")
    bad = write_preset(tmp_path, "bad", method={"name": "rrd", "tau_s": -1})
    result = runner.invoke(app, ["bench", str(bad), "--device", "cpu"])
    assert result.exit_code == 2 and "method.tau_s" in result.stderr
