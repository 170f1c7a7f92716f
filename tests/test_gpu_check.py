"""The GPU check and what it measures: train.teacher_dtype, train.cuda_graphs (rrdtui/train/graphs.py),
and scripts/gpu_check.sh's CPU dry run. CUDA-only paths are skipped where CUDA is absent, never faked."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rrdtui.config import ConfigError, from_mapping
from rrdtui.train import graphs
from rrdtui.train.gpu_check import DRY_RUN, PARTS, Check, RowFailed, finish, start
from rrdtui.train.loop import build, forward_batch, train_step

from conftest import TINY_DATA, TRAIN, config, run

ROOT = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA: CUDA-graph capture needs a GPU")


def student_cfg(teacher_file: str, method: str = "rrd+kd", **train):
    return config(
        "student",
        teacher={"checkpoint": teacher_file, "arch": "resnet14"},
        student={"arch": "resnet8"},
        method={"name": method, "queue_size": 100},
        train={**TRAIN, **train},
    )


def batches(setup, n: int) -> list[tuple[torch.Tensor, ...]]:
    perm = setup.source.permutation(setup.generator)
    out = []
    while len(out) < n:
        out += [tuple(t.clone() for t in b) for b in setup.source.epoch(perm, 0, setup.generator)]
    return out[:n]


# ---------------------------------------------------------------------------------------------
# The configuration keys
# ---------------------------------------------------------------------------------------------


def test_teacher_dtype_defaults_to_fp32_and_cuda_graphs_to_off():
    cfg = from_mapping({"name": "x", "data": TINY_DATA, "method": {"name": "none"}, "train": TRAIN, "optim": {"milestones": [2]}}, "test")
    assert (cfg.train.teacher_dtype, cfg.train.cuda_graphs) == ("fp32", False)


@pytest.mark.parametrize("train, message", [({"teacher_dtype": "fp16"}, "train.teacher_dtype"), ({"cuda_graphs": "yes"}, "train.cuda_graphs")])
def test_bad_teacher_dtype_and_cuda_graphs_are_refused_naming_the_key(train, message):
    raw = {"name": "x", "data": TINY_DATA, "method": {"name": "none"}, "train": {**TRAIN, **train}, "optim": {"milestones": [2]}}
    with pytest.raises(ConfigError, match=message):
        from_mapping(raw, "test")


# ---------------------------------------------------------------------------------------------
# train.teacher_dtype
# ---------------------------------------------------------------------------------------------


def test_an_fp32_teacher_stays_exact_inside_the_students_bf16_autocast(teacher_file):
    """The CPU's bf16 autocast stands in for the GPU's: an fp32 teacher's logits are its plain fp32
    forward, a bf16 teacher's differ (and reach the method as fp32 tensors)."""
    logits = {}
    for dtype in ("fp32", "bf16"):
        setup = build(student_cfg(teacher_file, teacher_dtype=dtype), teacher_file)
        setup.teacher.eval()
        x, y, index = batches(setup, 1)[0]
        with torch.no_grad():
            exact = setup.teacher(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = forward_batch(setup, x, y, index, 0, 0)
        assert out.teacher_logits.dtype == torch.float32
        logits[dtype] = (out.teacher_logits, exact)
    assert torch.equal(*logits["fp32"])
    assert not torch.equal(*logits["bf16"])
    assert torch.allclose(*logits["bf16"], atol=0.5)


def test_a_bf16_teacher_trains_a_student_on_the_cpu(tmp_path, teacher_file):
    _, _, outcome = run(tmp_path, student_cfg(teacher_file, teacher_dtype="bf16"), teacher_path=teacher_file)
    assert outcome.status == "completed"


# ---------------------------------------------------------------------------------------------
# train.cuda_graphs
# ---------------------------------------------------------------------------------------------


def test_the_graph_ready_step_gives_eagers_update(teacher_file, caplog):
    """What the graph records (static inputs, device learning rates, SGD's fused update), run eagerly
    on the CPU: the same parameters, RRD queue and loss as train_step, across a learning-rate change."""
    eager = build(student_cfg(teacher_file), teacher_file)
    ready = build(student_cfg(teacher_file), teacher_file)
    with caplog.at_level(logging.WARNING, logger="rrdtui.train"):
        step = graphs.GraphedStep(ready)
    assert step.status.startswith("eager: it needs a CUDA device")
    eager.train_mode(), ready.train_mode()
    for i, (x, y, index) in enumerate(batches(eager, 6)):
        if i == 3:  # a new epoch's learning rate, set as the loop sets it
            for setup in (eager, ready):
                setup.optimizer.param_groups[0]["lr"] = 0.01
        loss_e, _, correct_e = train_step(eager, x, y, index)
        step.load_inputs(x, y, index)
        step.load_lrs()
        loss_r, _, correct_r = step.body()
        torch.testing.assert_close(loss_r, loss_e)
        assert int(correct_r) == int(correct_e)
    assert step.lrs[0].item() == pytest.approx(0.01)
    group = ready.optimizer.param_groups[0]
    assert group["lr"] == 0.01 and not group["fused"]  # metrics and checkpoints see floats, as before
    for (name, a), b in zip(eager.student.state_dict().items(), ready.student.state_dict().values()):
        torch.testing.assert_close(b, a, msg=name)
    torch.testing.assert_close(ready.method.queue.keys, eager.method.queue.keys)
    assert int(ready.method.queue.pointer) == int(eager.method.queue.pointer) != 0


def test_cuda_graphs_on_the_cpu_train_eagerly_after_one_warning(tmp_path, teacher_file, caplog):
    with caplog.at_level(logging.WARNING, logger="rrdtui.train"):
        store, run_id, outcome = run(tmp_path / "g", student_cfg(teacher_file, cuda_graphs=True), teacher_path=teacher_file)
    warnings = [r.getMessage() for r in caplog.records if "train.cuda_graphs" in r.getMessage()]
    assert outcome.status == "completed" and len(warnings) == 1 and "needs a CUDA device" in warnings[0]
    plain_store, plain_id, _ = run(tmp_path / "p", student_cfg(teacher_file), teacher_path=teacher_file)
    assert store.latest(run_id)["val/acc"] == plain_store.latest(plain_id)["val/acc"]


def test_a_loss_that_reads_the_epoch_is_not_captured(teacher_file):
    setup = build(student_cfg(teacher_file, method="dkd"), teacher_file)
    assert "changes with the step or epoch" in graphs.unsupported(setup)
    assert graphs.unsupported(build(student_cfg(teacher_file), teacher_file)) == "it needs a CUDA device (this run trains on cpu)"


@needs_cuda
def test_the_captured_step_matches_eager_on_cuda(teacher_file):
    eager = build(student_cfg(teacher_file, device="cuda"), teacher_file)
    graphed = build(student_cfg(teacher_file, device="cuda", cuda_graphs=True), teacher_file)
    step = graphs.make_step(graphed)
    eager.train_mode(), graphed.train_mode()
    data = batches(eager, 12)
    data[8] = tuple(t[:-5] for t in data[8])  # a shorter batch runs eagerly between replays
    for i, (x, y, index) in enumerate(data):
        if i == 6:
            for setup in (eager, graphed):
                setup.optimizer.param_groups[0]["lr"] = 0.01
        loss_e, _, _ = train_step(eager, x, y, index)
        loss_g, _, _ = step(graphed, x, y, index)
        torch.testing.assert_close(loss_g, loss_e, rtol=0.05, atol=0.05)
    assert step.status == "captured"
    for a, b in zip(eager.student.parameters(), graphed.student.parameters()):
        torch.testing.assert_close(b, a, rtol=0.05, atol=0.02)


@needs_cuda
def test_a_step_that_cannot_be_captured_runs_eagerly_after_one_warning(teacher_file, monkeypatch, caplog):
    def syncing(*args, **kwargs):
        out = train_step(*args, **kwargs)
        out[0].item()  # a host read: not allowed while a graph is being captured
        return out

    monkeypatch.setattr(graphs, "train_step", syncing)
    setup = build(student_cfg(teacher_file, device="cuda", cuda_graphs=True), teacher_file)
    step = graphs.make_step(setup)
    with caplog.at_level(logging.WARNING, logger="rrdtui.train"):
        for x, y, index in batches(setup, graphs.WARMUP_STEPS + 3):
            loss, _, _ = step(setup, x, y, index)
    assert step.status.startswith("eager: capture failed") and torch.isfinite(loss)
    assert len([r for r in caplog.records if "train.cuda_graphs" in r.getMessage()]) == 1


# ---------------------------------------------------------------------------------------------
# The check's guards
# ---------------------------------------------------------------------------------------------


def test_a_child_past_its_limit_or_failing_fails_its_row_saying_why(tmp_path):
    sleeper = start([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path)
    with pytest.raises(RowFailed, match="timed out after 1 s"):
        finish(sleeper, 1, tmp_path / "sleeper.log")
    failing = start([sys.executable, "-c", "raise SystemExit('no GPU here')"], tmp_path)
    with pytest.raises(RowFailed, match="exit code 1: no GPU here"):
        finish(failing, 60, tmp_path / "failing.log")


def test_a_failed_row_is_recorded_and_the_next_one_runs(tmp_path):
    check = Check(tmp_path, DRY_RUN, dry_run=True, budget_s=600)

    def broken(limit):
        raise RuntimeError("boom")

    check.row("bench", "broken", broken, 60)
    check.row("bench", "fine", lambda limit: {"fast_img_s": 1.0}, 60)
    check.row("bench", "not here", lambda limit: {}, 60, skip="no CUDA")
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = result["parts"]["bench"]["rows"]
    assert [r["status"] for r in rows] == ["failed", "ok", "skipped"]
    assert result["parts"]["bench"]["status"] == "failed"
    assert result["failed"] == ["bench / broken: RuntimeError: boom"]
    assert "| broken |" in (tmp_path / "gpu_check.md").read_text()
    shutil.rmtree(check.work)  # run() removes it; this test never calls run()


# ---------------------------------------------------------------------------------------------
# The whole dry run, as the GPU machine would run it (without textual)
# ---------------------------------------------------------------------------------------------


def test_the_dry_run_measures_every_part_and_skips_only_cuda_rows(tmp_path):
    blocked = tmp_path / "blocked"
    for name in ("textual", "textual_plotext", "plotext"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} is not on the GPU machine')\n")
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(blocked)}
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out), "--dry-run"],
        env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["dry_run"] and result["failed"] == [], result["failed"]
    parts = result["parts"]
    assert list(parts) == list(PARTS)
    for name, part in parts.items():
        assert part["status"] == "ok", (name, part["reason"])
        for row in part["rows"]:
            assert row["status"] in ("ok", "skipped"), row
            assert row["status"] == "ok" or row["reason"]
    bench = {r["name"]: r for r in parts["bench"]["rows"]}
    assert list(bench) == ["cifar_wrn RRD", "cifar_wrn KD", "cifar_wrn CRD", "resnet32x4 -> resnet8x4 RRD"]
    for row in bench.values():
        for key in ("fast_img_s", "reference_img_s", "ratio", "step_ms", "peak_mem_mb", "rrd_loss_share", "full_run_s"):
            assert row["figures"][key] > 0, (row["name"], key)
    assert bench["cifar_wrn CRD"]["figures"]["method"] == "crd"
    modes = {r["name"]: r for r in parts["modes"]["rows"]}
    assert modes["eager"]["status"] == "ok" and modes["eager"]["figures"]["fast_img_s"] > 0
    for name in ("CUDA graphs (train.cuda_graphs)", "train.compile, reduce-overhead"):
        assert modes[name]["status"] == "skipped" and "CUDA" in modes[name]["reason"]
    assert modes["train.compile"]["status"] == "skipped" and "dry run" in modes["train.compile"]["reason"]
    packed = [r["figures"] for r in parts["packed"]["rows"]]
    assert [f["trainers"] for f in packed] == [1, 2]
    assert all(f["aggregate_img_s"] > 0 and len(f["per_trainer_img_s"]) == f["trainers"] for f in packed)
    fidelity = parts["fidelity"]["rows"][0]["figures"]
    for key in ("mean_kl_T4", "top1_agreement", "student_acc_fp32", "student_acc_bf16", "teacher_acc_fp32"):
        assert fidelity[key] is not None, key
    run_row, stop_row = (r["figures"] for r in parts["demo"]["rows"])
    assert run_row["status"] == stop_row["status"] == "completed" and run_row["teacher_status"] == "completed"
    assert 1 <= stop_row["stopped_at_step"] < stop_row["step"]
    md = (out / "gpu_check.md").read_text()
    assert "dry run" in md and "## Failures" in md
    for title in PARTS.values():
        assert title in md
