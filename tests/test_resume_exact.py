"""A stopped or crashed run, resumed, has exactly the history of a run never interrupted: every
method's state (RRD's queue, CRD's banks and sampler), the optimiser, the generators and the unread
metric sums come back, and rows written past the checkpoint are replaced, never doubled."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rrdtui.config import from_mapping
from rrdtui.store import RunReporter, Store
from rrdtui.train.loop import train

from conftest import TINY_DATA

# 192 images in batches of 32: 6 steps an epoch; rows every 4 steps, so a stop at step 9 falls
# mid-epoch and mid-interval.
TRAIN = {"epochs": 3, "batch_size": 32, "device": "cpu", "log_every": 4}
METHODS = {
    "none": {},
    "kd": {},
    "rrd": {"queue_size": 100},
    "crd": {"crd_negatives": 64},
}


class Crash(Exception):
    """Stands in for kill -9: the loop ends where it is, writing no checkpoint."""


def config(method: str):
    raw = {
        "name": method,
        "data": TINY_DATA,
        "student": {"arch": "resnet8"},
        "method": {"name": method, **METHODS[method]},
        "optim": {"lr": 0.05, "milestones": [2]},
        "train": TRAIN,
    }
    if method != "none":
        raw["teacher"] = {"checkpoint": "set below", "arch": "resnet8"}
    return from_mapping(raw, "test")


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("teacher")
    cfg = config("none")
    store = Store(tmp / "runs")
    run_id = store.create_run(cfg.to_dict())
    reporter = RunReporter(store, run_id)
    reporter.start()
    outcome = train(cfg, store.run_dir(run_id), reporter)
    reporter.finish(outcome.status)
    path = tmp / "teacher.pth"
    torch.save({"model": torch.load(store.run_dir(run_id) / "last.pt", weights_only=True)["model"]}, path)
    return str(path)


def start(folder: Path, cfg) -> tuple[Store, str]:
    store = Store(folder / "runs")
    return store, store.create_run(cfg.to_dict())


def attempt(store: Store, run_id: str, cfg, teacher: str | None, resume: bool = False, stop_flag=lambda: False):
    """One trainer's go at the run, flushing every row at once (so rows past a checkpoint exist)."""
    if resume:
        store.claim([run_id])
    reporter = RunReporter(store, run_id, flush_seconds=0.0)
    assert reporter.start()
    try:
        outcome = train(cfg, store.run_dir(run_id), reporter, teacher_path=teacher, resume=resume, stop_flag=stop_flag)
    except Crash:
        reporter.flush()
        reporter.finish("crashed")
        return "crashed"
    reporter.finish(outcome.status)
    return outcome.status


def history(store: Store, run_id: str) -> dict[str, list[tuple[int, float]]]:
    names = [n for n in store.metric_names(run_id) if n != "train/throughput"]  # a rate, not state
    return {n: [(s, v) for s, _, v in store.series(run_id, n)] for n in names}


def after(n: int, action):
    calls = {"n": 0}

    def flag():
        calls["n"] += 1
        if calls["n"] == n:
            return action()
        return False

    return flag


def crash():
    raise Crash()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, teacher_file):
    """Each method's history trained straight through, once for all the interruptions."""
    histories = {}

    def get(method: str):
        if method not in histories:
            cfg, teacher = setup(method, teacher_file)
            store, run_id = start(tmp_path_factory.mktemp(f"ref-{method.replace('+', '_')}"), cfg)
            assert attempt(store, run_id, cfg, teacher) == "completed"
            histories[method] = history(store, run_id)
        return histories[method]

    return get


def setup(method: str, teacher_file: str):
    cfg = config(method)
    if method == "none":
        return cfg, None
    cfg.teacher.checkpoint = teacher_file
    return cfg, teacher_file


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("interruption", ["stop_mid_epoch", "stop_at_epoch_end", "crash_mid_epoch"])
def test_an_interrupted_run_resumes_to_the_uninterrupted_history(tmp_path, teacher_file, uninterrupted, method, interruption):
    cfg, teacher = setup(method, teacher_file)
    store, run_id = start(tmp_path / "cut", cfg)
    # The stop flag is read before training (call 1), after each step (steps 1-6: calls 2-7) and at
    # each epoch's end (call 8), then after steps 7, 8, 9, ... (calls 9, 10, 11, ...).
    flag = {
        "stop_mid_epoch": after(11, lambda: True),  # after step 9: mid-epoch 2, mid-interval
        "stop_at_epoch_end": after(7, lambda: True),  # after step 6, the last batch of epoch 1
        "crash_mid_epoch": after(12, crash),  # after step 10; step 8's rows lie past the checkpoint
    }[interruption]
    first = attempt(store, run_id, cfg, teacher, stop_flag=flag)
    assert first == ("crashed" if interruption.startswith("crash") else "stopped")
    if interruption.startswith("crash"):
        assert max(s for s, _, _ in store.series(run_id, "train/loss")) > 6  # rows past the checkpoint

    assert attempt(store, run_id, cfg, teacher, resume=True) == "completed"
    got, want = history(store, run_id), uninterrupted(method)
    assert got.keys() == want.keys()
    for name in want:
        assert [s for s, _ in got[name]] == [s for s, _ in want[name]], name  # no extra row, no gap
        assert [v for _, v in got[name]] == pytest.approx([v for _, v in want[name]], rel=1e-6, abs=1e-9), name
