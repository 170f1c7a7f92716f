"""PKT, AB, FT, FSP, NST and DKD: real training on the tiny synthetic data (their own terms, or their
first stage's, falling), the first stages (what they train, and that a resumed run does not repeat
them), DKD's warm-up, and the pairings they refuse."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from rrdtui.config import Config, validate
from rrdtui.losses import dkd_loss
from rrdtui.registry import method_info
from rrdtui.store import RunReporter, Store
from rrdtui.train import loop
from rrdtui.train.loop import TrainError, classifier_module, train
from rrdtui.train.methods.base import Context, Forward, MethodError, build_method
from rrdtui.train.models import build_model

from conftest import config, run

EVERY_STEP = -(10**9)  # Store.series(after_step=...) that includes the first stage's negative steps


def student_config(method: str, teacher_file: str, teacher_arch: str = "resnet14", **method_fields):
    return config(
        method,
        teacher={"checkpoint": teacher_file, "arch": teacher_arch},
        student={"arch": "resnet8"},
        method={"name": method, **method_fields},
    )


def start(tmp_path: Path, cfg):
    store = Store(tmp_path / "runs")
    run_id = store.create_run(cfg.to_dict(), config_hash=cfg.fingerprint())
    reporter = RunReporter(store, run_id)
    reporter.start()
    return store, run_id, reporter, tmp_path / "runs" / run_id


def values(store: Store, run_id: str, name: str) -> list[float]:
    return [v for _, _, v in store.series(run_id, name, after_step=EVERY_STEP)]


def assert_falls(series: list[float], name: str) -> None:
    assert len(series) >= 6 and all(torch.isfinite(torch.tensor(series))), (name, series)
    assert sum(series[-3:]) / 3 < sum(series[:3]) / 3, f"{name} did not fall: {series}"


# (method, method fields, the metrics that must fall). AB and FSP train only in their first stage
# (RepDistiller's main stage is CE alone), FT in both. DKD's warm-up is shortened to one epoch here so
# its reported term (which includes the ramp) can fall; the ramp itself is tested below.
RUNS = [
    ("pkt", {}, ["train/loss_pkt"]),
    ("nst", {}, ["train/loss_nst"]),
    ("nst+kd", {}, ["train/loss_nst", "train/loss_kd"]),
    ("dkd", {"options": {"warmup": 1}}, ["train/loss_dkd"]),
    ("ab", {"options": {"init_epochs": 2}}, ["first/loss_ab"]),
    ("fsp", {"options": {"init_epochs": 2}}, ["first/loss_fsp"]),
    ("ft", {"options": {"init_epochs": 2}}, ["first/loss_ft_rec", "train/loss_ft"]),
]


@pytest.mark.parametrize("method, fields, falling", RUNS, ids=[m for m, _, _ in RUNS])
def test_each_method_trains_and_its_distillation_loss_falls(tmp_path, teacher_file, method, fields, falling):
    cfg = student_config(method, teacher_file, **fields)
    store, run_id, outcome = run(tmp_path, cfg, teacher_path=teacher_file)
    assert outcome.status == "completed"
    for name in falling:
        assert_falls(values(store, run_id, name), name)
    latest = store.latest(run_id)
    assert len(store.series(run_id, "val/acc")) == 3 and 0 <= latest["val/acc"] <= 100
    own = {f"train/loss_{t}" for t in method_info(method).terms}
    assert own == {k for k in latest if k.startswith("train/loss_")}
    first_stage = method_info(method).first_stage is not None
    events = [e["message"] for e in store.events(run_id)]
    assert events.count("first stage done") == int(first_stage)
    first_rows = store.series(run_id, falling[0], after_step=EVERY_STEP) if first_stage else []
    assert all(step < 0 for step, _, _ in first_rows)
    if first_stage:
        assert len(first_rows) == 2 * 6 // 2  # 2 epochs of 6 steps, a row every 2 steps


def test_a_resumed_run_does_not_repeat_its_first_stage(tmp_path, teacher_file, monkeypatch):
    cfg = student_config("ft", teacher_file, options={"init_epochs": 1})
    store, run_id, reporter, run_dir = start(tmp_path, cfg)
    # Stop as soon as the first stage's checkpoint exists: the main stage has taken one step.
    first = train(cfg, run_dir, reporter, teacher_path=teacher_file, stop_flag=lambda: (run_dir / "last.pt").exists())
    reporter.finish(first.status)
    assert first.status == "stopped"
    before = store.series(run_id, "first/loss_ft_rec", after_step=EVERY_STEP)
    assert len(before) == 3 and before[-1][0] == -1

    stages = []
    real = loop.run_first_stage
    monkeypatch.setattr(loop, "run_first_stage", lambda *a, **k: stages.append(1) or real(*a, **k))
    reporter = RunReporter(store, run_id)
    reporter.start()
    second = train(cfg, run_dir, reporter, teacher_path=teacher_file, resume=True)
    reporter.finish(second.status)
    assert second.status == "completed"
    assert stages == []
    assert store.series(run_id, "first/loss_ft_rec", after_step=EVERY_STEP) == before
    assert [e["message"] for e in store.events(run_id)].count("first stage done") == 1
    assert [s for s, _, _ in store.series(run_id, "val/acc")] == [6, 12, 18]
    assert len(store.series(run_id, "train/loss_ft")) == 9  # every 2 of 18 steps, none twice


# ---------------------------------------------------------------------------------------------
# The methods built directly
# ---------------------------------------------------------------------------------------------


def method_config(name: str, **options):
    cfg = Config()
    cfg.teacher.checkpoint, cfg.teacher.arch = "t.pth", "resnet14"
    cfg.method.name = name
    cfg.method.options = options
    validate(cfg)
    return cfg.method


def context(name: str, student: nn.Module, teacher: nn.Module, epochs: int = 3, **options) -> Context:
    return Context(
        method_config(name, **options), method_info(name), student, teacher, torch.arange(64) % 4, 4, 3, 32,
        epochs, 8, 8, torch.Generator().manual_seed(0),
    )


def test_published_weights_and_paper_keys():
    expected = {"pkt": 30000.0, "ab": 1.0, "ft": 200.0, "fsp": 50.0, "nst": 50.0, "dkd": 1.0}
    for name, beta in expected.items():
        info = method_info(name)
        assert info.weights == {"gamma": 1.0, "alpha": 0.0, "beta": beta}, name
        assert method_info(name + "+kd").weights["alpha"] == 1.0
    assert [method_info(n).paper_key for n in expected] == ["PKT", "AB", "FT", "FSP", "NST", None]
    assert method_info("dkd").options == {"dkd_alpha": 1.0, "dkd_beta": 8.0, "T": 4.0, "warmup": 20}
    # AB and FSP add nothing to the main stage, as in RepDistiller.
    assert method_info("ab").terms == ("ce",) and method_info("fsp").terms == ("ce",)


def test_dkd_warms_up_over_its_first_epochs_as_mdistiller():
    net = SimpleNamespace(feat_dim=16)
    method = build_method(context("dkd", net, net))
    g = torch.Generator().manual_seed(0)
    s, t, y = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g), torch.arange(8) % 4
    full = dkd_loss(s, t, y, 1.0, 8.0, 4.0)
    got = []
    for epoch in (0, 10, 30):
        out = Forward(torch.zeros(8, 16), s, torch.zeros(8, 16), t, y, torch.arange(8), epoch=epoch)
        got.append(float(method.terms(out)["dkd"] / full))
    # mdistiller's epochs count from 1: its factor min(epoch / 20, 1) in our epoch e is (e + 1) / 20.
    assert got == pytest.approx([1 / 20, 11 / 20, 1.0])
    assert method.weights == {"ce": 1.0, "dkd": 1.0}


def test_first_stage_length_defaults_to_an_eighth_of_the_run():
    s, t = build_model("resnet8", 4), build_model("resnet14", 4)
    assert build_method(context("ab", s, t, epochs=240)).first_stage(s).epochs == 30
    assert build_method(context("fsp", s, t, epochs=3)).first_stage(s).epochs == 1
    assert build_method(context("ft", s, t, epochs=240, init_epochs=5)).first_stage(s).epochs == 5
    with pytest.raises(MethodError, match="init_epochs"):
        build_method(context("ft", s, t, init_epochs=0))


def test_ab_connects_each_stage_and_trains_connectors_with_the_feature_layers_first():
    s, t = build_model("resnet8", 4), build_model("resnet8x4", 4)
    method = build_method(context("ab", s, t))
    assert not any(p.requires_grad for p in method.connectors.parameters())  # out of the main optimiser
    x = torch.randn(2, 3, 32, 32)
    s_maps, _, _ = s.forward_with_maps(x, preact=True)
    t_maps, _, _ = t.forward_with_maps(x, preact=True)
    for conn, a, b in zip(method.connectors, s_maps[1:], t_maps[1:]):
        assert isinstance(conn[0], nn.Conv2d) and conn[0].kernel_size == (1, 1)
        assert conn(a).shape == b.shape
    stage = method.first_stage(s)
    trained = {id(p) for p in stage.parameters}
    assert {id(p) for p in method.connectors.parameters()} <= trained
    assert not trained & {id(p) for p in classifier_module(s).parameters()}
    assert len(trained) == len(list(method.connectors.parameters())) + len(list(s.parameters())) - 2
    assert stage.student_train and stage.lr == 0.05 and method.wants_maps
    # Equal shapes need no connector at all.
    same = build_method(context("ab", build_model("resnet8", 4), build_model("resnet14", 4)))
    assert all(isinstance(c, nn.Identity) for c in same.connectors)


def test_ft_trains_its_paraphraser_first_and_then_only_the_translator():
    s, t = build_model("resnet8", 4), build_model("resnet14", 4)
    method = build_method(context("ft", s, t))
    assert not any(p.requires_grad for p in method.paraphraser.parameters())
    stage = method.first_stage(s)
    assert {id(p) for p in stage.parameters} == {id(p) for p in method.paraphraser.parameters()}
    assert not stage.student_train and stage.lr == 0.01
    x = torch.randn(4, 3, 32, 32)
    t_maps, t_feat, t_logits = t.forward_with_maps(x)
    s_maps, s_feat, s_logits = s.forward_with_maps(x)
    out = Forward(s_feat, s_logits, t_feat.detach(), t_logits.detach(), torch.arange(4), torch.arange(4),
                  student_maps=s_maps, teacher_maps=[m.detach() for m in t_maps])
    method.terms(out)["ft"].backward()
    assert all(p.grad is None for p in method.paraphraser.parameters())  # frozen in the main stage
    assert all(p.grad is not None for p in method.translator.parameters())


def test_fsp_refuses_maps_of_different_widths_naming_the_shapes(tmp_path):
    s, t = build_model("resnet8", 4), build_model("resnet8x4", 4)
    with pytest.raises(MethodError, match=r"student's maps are 16x32x32, .* teacher's 32x32x32, ") as info:
        build_method(context("fsp", s, t))
    assert "\n" not in str(info.value)
    # Through the trainer: a one-line error before any step.
    path = tmp_path / "wide.pth"
    torch.save({"model": t.state_dict()}, path)
    cfg = student_config("fsp", str(path), teacher_arch="resnet8x4")
    with pytest.raises(TrainError, match=r"^method fsp: FSP needs the same channel count"):
        run(tmp_path, cfg, teacher_path=str(path))
