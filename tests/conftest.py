"""Shared fixtures: tiny presets on the synthetic data, written into a temporary folder."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

TINY_DATA = {"name": "synthetic", "num_classes": 4, "train_size": 192, "val_size": 96, "probe_size": 64}
TINY_TRAIN = {"epochs": 2, "batch_size": 32, "device": "cpu", "log_every": 2}


def write_preset(folder: Path, name: str, **sections) -> Path:
    """A preset file `folder/name.yaml` from keyword sections (plain dicts)."""
    body = {"name": name, **sections}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


@pytest.fixture
def tiny_presets(tmp_path: Path) -> dict[str, Path]:
    """A tiny teacher (resnet14) and an RRD+KD student (resnet8) that names it as a preset."""
    folder = tmp_path / "presets"
    folder.mkdir()
    teacher = write_preset(
        folder,
        "tiny_teacher",
        data=TINY_DATA,
        student={"arch": "resnet14"},
        method={"name": "none"},
        optim={"lr": 0.05, "milestones": [1]},
        train=TINY_TRAIN,
    )
    student = write_preset(
        folder,
        "tiny_student",
        data=TINY_DATA,
        teacher={"preset": "tiny_teacher.yaml"},
        student={"arch": "resnet8"},
        method={"name": "rrd+kd", "tau_s": 0.04, "tau_t": 0.1, "queue_size": 100},
        optim={"lr": 0.05, "milestones": [1]},
        train=TINY_TRAIN,
    )
    return {"teacher": teacher, "student": student, "folder": folder}


@pytest.fixture
def utc(monkeypatch):
    """Local time is UTC for the test (dashboard tests render dates)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# Real training in process, for the tests of the loop and of the methods.
TRAIN = {"epochs": 3, "batch_size": 32, "device": "cpu", "log_every": 2}


def config(name: str, **sections):
    """A tiny resolved configuration on the synthetic data (3 epochs, batch 32)."""
    from rrdtui.config import from_mapping

    raw = {"name": name, "data": TINY_DATA, "optim": {"lr": 0.05, "milestones": [2]}, "train": TRAIN}
    raw.update(sections)
    return from_mapping(raw, "test")


def run(tmp_path: Path, cfg, teacher_path=None, **kwargs):
    """Train cfg in this process as a run of the store in tmp_path/runs; (store, run id, outcome)."""
    from rrdtui.store import RunReporter, Store
    from rrdtui.train.loop import train

    store = Store(tmp_path / "runs")
    run_id = store.create_run(cfg.to_dict(), config_hash=cfg.fingerprint())
    reporter = RunReporter(store, run_id)
    reporter.start()
    outcome = train(cfg, tmp_path / "runs" / run_id, reporter, teacher_path=teacher_path, **kwargs)
    reporter.finish(outcome.status)
    return store, run_id, outcome


@pytest.fixture(scope="session")
def teacher_file(tmp_path_factory) -> str:
    """A resnet14 teacher trained briefly on the tiny data, saved in RepDistiller's layout; trained
    once for every test file that distils from it."""
    import torch

    tmp = tmp_path_factory.mktemp("teacher")
    _, run_id, outcome = run(tmp, config("teacher", student={"arch": "resnet14"}, method={"name": "none"}))
    assert outcome.status == "completed"
    state = torch.load(tmp / "runs" / run_id / "last.pt", weights_only=True)["model"]
    path = tmp / "ckpt_epoch_240.pth"
    torch.save({"model": state, "epoch": 240}, path)
    return str(path)
