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
