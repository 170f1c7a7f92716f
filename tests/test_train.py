"""Real training on tiny synthetic data, in process: every method, teachers in the published format,
the faults a run can end with. (The CLI and the trainer process are tested in test_cli.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rrdtui.store import RunReporter, Store
from rrdtui.train.loop import Diverged, TrainError, train
from rrdtui.train.models import build_model

from conftest import TINY_DATA, TRAIN, config, run


METHODS = [
    ("kd", {}, "train/loss_kd"),
    ("rrd", {"queue_size": 100}, "train/loss_rrd"),
    ("rrd+kd", {"queue_size": 100}, "train/loss_rrd"),
    ("crd", {"crd_negatives": 64}, "train/loss_crd"),
    ("crd+kd", {"crd_negatives": 64}, "train/loss_crd"),
]


@pytest.mark.parametrize("method, extra, term", METHODS, ids=[m for m, _, _ in METHODS])
def test_every_method_trains_and_its_distillation_loss_falls(tmp_path, teacher_file, method, extra, term):
    cfg = config(
        method,
        teacher={"checkpoint": teacher_file, "arch": "resnet14"},
        student={"arch": "resnet8"},
        method={"name": method, **extra},
    )
    store, run_id, outcome = run(tmp_path, cfg, teacher_path=teacher_file)
    assert outcome.status == "completed"
    values = [v for _, _, v in store.series(run_id, term)]
    assert len(values) >= 6 and all(torch.isfinite(torch.tensor(values)))
    if method.startswith("crd"):
        # CRD's banks start random and Z is fixed at the first step: its loss jumps once every sample
        # has been written to the banks (after epoch 1, 3 logged values), and falls from there.
        values = values[3:]
    assert sum(values[-3:]) / 3 < sum(values[:3]) / 3, f"{term} did not fall: {values}"
    latest = store.latest(run_id)
    for name in ("train/loss", "train/loss_ce", "train/lr", "train/acc", "train/throughput", "val/acc", "val/loss",
                 "teacher/val_acc", "sim/agreement", "sim/kl", "sim/cka", "sim/relation_corr", "sim/logit_corr_diff"):
        assert name in latest, name
    assert ("rrd/entropy_t" in latest) == method.startswith("rrd")
    assert ("train/loss_kd" in latest) == method.endswith("kd")
    assert 0 <= latest["sim/agreement"] <= 100 and 0 <= latest["val/acc"] <= 100
    artifact = store.get_artifact(run_id, "logit_corr_diff")
    assert len(artifact["matrix"]) == len(artifact["classes"]) > 1
    assert (tmp_path / "runs" / run_id / "best.pt").exists()


def test_published_teacher_gives_the_same_logits_and_preflight_accuracy(tmp_path, teacher_file):
    model = build_model("resnet14", 4)
    model.load_state_dict(torch.load(teacher_file, weights_only=True)["model"])
    model.eval()
    cfg = config("kd", teacher={"checkpoint": teacher_file, "arch": "resnet14"}, method={"name": "kd"},
                 optim={"lr": 0.05, "milestones": [1]}, train={**TRAIN, "epochs": 1})
    store, run_id, _ = run(tmp_path, cfg, teacher_path=teacher_file)
    assert store.get_run(run_id)["teacher_acc"] == pytest.approx(store.latest(run_id)["teacher/val_acc"])


def test_wrong_teacher_expected_accuracy_warns(tmp_path, teacher_file):
    cfg = config("kd", teacher={"checkpoint": teacher_file, "arch": "resnet14", "expected_acc": 101.0},
                 method={"name": "kd"}, optim={"lr": 0.05, "milestones": [1]}, train={**TRAIN, "epochs": 1})
    store, run_id, _ = run(tmp_path, cfg, teacher_path=teacher_file)
    warnings = [e["message"] for e in store.events(run_id) if e["level"] == "warning"]
    assert warnings and "TEACHER CHECK" in warnings[0]


def test_teacher_of_other_classes_or_architecture_is_a_clear_error(tmp_path, teacher_file):
    cfg = config("kd", teacher={"checkpoint": teacher_file, "arch": "resnet14"}, method={"name": "kd"},
                 data={**TINY_DATA, "num_classes": 5})
    with pytest.raises(TrainError, match="predicts 4 classes but the data set has 5"):
        run(tmp_path, cfg, teacher_path=teacher_file)
    cfg = config("kd", teacher={"checkpoint": teacher_file, "arch": "resnet20"}, method={"name": "kd"})
    with pytest.raises(TrainError, match="does not fit teacher.arch 'resnet20'"):
        run(tmp_path, cfg, teacher_path=teacher_file)


def test_nan_loss_ends_as_diverged_naming_the_term(tmp_path):
    cfg = config("boom", method={"name": "none"}, optim={"lr": 1e12, "milestones": [2]})
    with pytest.raises(Diverged, match=r"train/loss\S* became (nan|inf)"):
        run(tmp_path, cfg)


def test_stop_flag_writes_a_resumable_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path):
    cfg = config("plain", method={"name": "none"}, student={"arch": "resnet8"})
    _, ref_id, ref = run(tmp_path / "a", cfg)
    ref_store = Store(tmp_path / "a" / "runs")

    calls = {"n": 0}

    def stop_after_some_steps():
        calls["n"] += 1
        return calls["n"] == 9  # mid-epoch 2 (6 steps per epoch)

    store, run_id, first = run(tmp_path / "b", cfg, stop_flag=stop_after_some_steps)
    assert first.status == "stopped"
    reporter = RunReporter(store, run_id)
    reporter.start()
    second = train(cfg, tmp_path / "b" / "runs" / run_id, reporter, resume=True)
    reporter.finish(second.status)
    assert second.status == "completed"
    assert second.final["val_acc"] == pytest.approx(ref.final["val_acc"])
    for name in ("val/acc", "val/loss", "train/loss"):
        got = store.series(run_id, name)
        want = ref_store.series(ref_id, name)
        assert [s for s, _, _ in got] == [s for s, _, _ in want], name  # no duplicate, no gap
    assert [v for *_, v in store.series(run_id, "val/loss")] == pytest.approx(
        [v for *_, v in ref_store.series(ref_id, "val/loss")], rel=1e-5
    )


DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.mark.skipif(not DEBIAN_FASHION.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_package_trains_for_real(tmp_path):
    cfg = config(
        "fmnist",
        data={"name": "fashion_mnist", "train_limit": 3000, "probe_size": 64},
        student={"arch": "resnet8"},
        method={"name": "none"},
        optim={"lr": 0.05, "milestones": [1]},  # a calmer second epoch: stable BatchNorm statistics
        train={**TRAIN, "epochs": 2, "batch_size": 64, "log_every": 4},
    )
    store, run_id, outcome = run(tmp_path, cfg)
    assert outcome.status == "completed"
    losses = [v for *_, v in store.series(run_id, "train/loss")]
    assert losses[-1] < losses[0]
    print("fashion-mnist val/acc", outcome.final["val_acc"])
    assert outcome.final["val_acc"] > 35  # 10 classes: chance is 10%, on the full 10,000-image test set


def test_a_folder_data_set_streams_through_a_dataloader(tmp_path):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, count in (("train", 12), ("val", 4)):
        for label, colour in enumerate(((220, 30, 30), (30, 30, 220))):
            folder = tmp_path / "images" / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                noise = torch.randint(0, 40, (32, 32, 3), generator=g, dtype=torch.uint8)
                pixels = (torch.tensor(colour, dtype=torch.uint8) + noise).clamp(0, 255).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    cfg = config(
        "folder",
        data={"name": "imagefolder", "root": str(tmp_path / "images"), "workers": 0, "probe_size": 8},
        student={"arch": "resnet8"},
        method={"name": "none"},
        train={**TRAIN, "epochs": 2, "batch_size": 8},
    )
    store, run_id, outcome = run(tmp_path, cfg)
    assert outcome.status == "completed"
    assert len(store.series(run_id, "val/acc")) == 2 and store.latest(run_id)["train/throughput"] > 0
