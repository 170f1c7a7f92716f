"""`rrdtui transfer`: the paper's linear probe, end to end on tiny data (a real trainer process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import rrdtui.datacheck as datacheck
from rrdtui.cli import app
from rrdtui.config import ConfigError, from_mapping
from rrdtui.store import RunReporter, Store
from rrdtui.train.loop import train
from rrdtui.transfer import transfer_config

from conftest import TINY_DATA

runner = CliRunner()


def write_stl10(folder: Path, per_class: int = 8, seed: int = 0) -> None:
    """A tiny STL-10 binary layout: 96x96 colour images, stored channel by channel column-major."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for split, n in (("train", per_class), ("test", 3)):
        labels = np.repeat(np.arange(1, 11, dtype=np.uint8), n)
        images = rng.integers(0, 256, (labels.size, 3, 96, 96), dtype=np.uint8)
        (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
        (folder / f"{split}_y.bin").write_bytes(labels.tobytes())


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny completed run (resnet8 on synthetic data, 1 epoch on the CPU), trained in process."""
    tmp = tmp_path_factory.mktemp("transfer")
    cfg = from_mapping(
        {"name": "tiny_source", "data": TINY_DATA, "student": {"arch": "resnet8"}, "method": {"name": "none"},
         "optim": {"lr": 0.05, "milestones": [1]}, "train": {"epochs": 1, "batch_size": 32, "device": "cpu", "log_every": 2}},
        "test",
    )  # fmt: skip
    runs = tmp / "runs"
    store = Store(runs)
    run_id = store.create_run(cfg.to_dict(), config_hash=cfg.fingerprint())
    reporter = RunReporter(store, run_id)
    reporter.start()
    outcome = train(cfg, runs / run_id, reporter)
    reporter.finish(outcome.status)
    assert outcome.status == "completed"
    store.close()
    return {"tmp": tmp, "runs": runs, "id": run_id}


def test_transfer_trains_a_linear_probe_on_the_frozen_backbone(source, tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_stl10(data / "stl10" / "stl10_binary")
    monkeypatch.setenv("RRDTUI_DATA", str(data))
    monkeypatch.setattr(datacheck, "reachable", lambda *a, **k: pytest.fail("the files are there: no network check"))
    runs = source["runs"]
    result = runner.invoke(
        app,
        ["transfer", source["id"], "--data", "stl10", "--runs", str(runs), "--set", "train.epochs=1",
         "--set", "optim.milestones=[1]", "--set", "train.device=cpu"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    store = Store(runs)
    src = store.get_run(source["id"])
    [probe] = [r for r in store.list_runs() if r["id"] != source["id"]]
    assert probe["status"] == "completed", probe.get("error")
    assert probe["name"] == f"transfer_stl10_{src['name']}" and probe["grp"] == "transfer"
    assert probe["preset"] == f"transfer:{source['id']}" and probe["data"] == "stl10"
    cfg = json.loads(probe["config"])
    last = Path(src["run_dir"]) / "last.pt"
    assert cfg["student"] == {"arch": "resnet8", "init": str(last.resolve()), "freeze": True}
    assert cfg["method"]["name"] == "none" and cfg["data"]["image_size"] == 32
    # The paper's probe recipe (lr 0.05) with this test's overrides (1 epoch, so its milestone is 1).
    assert cfg["optim"]["lr"] == 0.05 and cfg["optim"]["milestones"] == [1] and cfg["train"]["epochs"] == 1
    assert cfg["train"]["batch_size"] == 64 and cfg["train"]["epochs"] == 1 and cfg["paper"] is None
    assert "val/acc" in store.latest(probe["id"])

    before = torch.load(last, weights_only=True)["model"]
    after = torch.load(Path(probe["run_dir"]) / "last.pt", weights_only=True)["model"]
    convs = [k for k, v in before.items() if v.ndim == 4]
    assert convs and all(torch.equal(before[k], after[k]) for k in convs)  # the backbone is frozen
    bn_stats = [k for k in before if k.endswith("running_mean")]
    assert bn_stats and all(torch.equal(before[k], after[k]) for k in bn_stats)  # kept in eval mode
    classifier = [k for k, v in after.items() if v.ndim == 2]
    assert classifier and all(before[k].shape != after[k].shape or not torch.equal(before[k], after[k]) for k in classifier)
    assert after[classifier[-1]].shape[0] == 10  # STL-10's classes
    store.close()


def test_transfer_refuses_unfinished_runs_and_missing_data(source, tmp_path, monkeypatch):
    runs = source["runs"]
    store = Store(runs)
    row = store.get_run(source["id"])
    cfg = from_mapping(json.loads(row["config"]), "test")
    queued = store.create_run(cfg.to_dict())
    store.update_run(queued, status="stopped")
    store.close()
    count = len(Store(runs).list_runs())

    result = runner.invoke(app, ["transfer", queued, "--data", "stl10", "--runs", str(runs)])
    assert result.exit_code == 2 and "is stopped: only a completed run can be probed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    monkeypatch.setenv("RRDTUI_DATA", str(tmp_path / "none"))
    monkeypatch.setattr(datacheck, "reachable", lambda *a, **k: False)
    result = runner.invoke(app, ["transfer", source["id"], "--data", "tiny_imagenet", "--runs", str(runs)])
    assert result.exit_code == 2 and "Tiny-ImageNet not found" in result.stderr
    result = runner.invoke(app, ["transfer", source["id"], "--data", "stl10", "--runs", str(runs)])
    assert result.exit_code == 2 and "STL-10 not found" in result.stderr and "network is unreachable" in result.stderr
    result = runner.invoke(app, ["transfer", source["id"], "--data", "cifar10", "--runs", str(runs)])
    assert result.exit_code == 2 and "--data must be stl10 or tiny_imagenet" in result.stderr
    assert len(Store(runs).list_runs()) == count  # nothing was created


def test_paper_numbers_for_the_wrn_pair(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"")
    source = {"name": "w", "data": {"name": "cifar100"}, "student": {"arch": "wrn_16_2"},
              "teacher": {"arch": "wrn_40_2"}, "method": {"name": "rrd"}, "train": {"device": "cpu"}}  # fmt: skip
    row = {"id": "abcd1234", "name": "w", "status": "completed", "run_dir": str(tmp_path),
           "student_arch": "wrn_16_2", "config": json.dumps(source)}  # fmt: skip
    assert transfer_config(row, "stl10").paper == {"RRD": 71.2}
    assert transfer_config(row, "tiny_imagenet").paper == {"RRD": 34.6}
    source["method"]["name"] = "crd+kd"
    row["config"] = json.dumps(source)
    cfg = transfer_config(row, "stl10", ["optim.lr=0.1"])
    assert cfg.paper == {"CRD+KD": 72.2} and cfg.optim.lr == 0.1 and cfg.train.epochs == 120
    source["student"]["arch"] = "resnet8"
    row["config"] = json.dumps(source)
    assert transfer_config(row, "stl10").paper is None
    with pytest.raises(ConfigError, match="unknown key 'optim.lrr'"):
        transfer_config(row, "stl10", ["optim.lrr=0.1"])
