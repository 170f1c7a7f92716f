"""Presets: loading, defaults, overrides, and every kind of bad input as one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from rrdtui.registry import default_weights, method_names
from rrdtui.config import ConfigError, load_preset

ROOT = Path(__file__).resolve().parents[1]


def test_demo_presets_load_and_spell_out_temperatures():
    cfg = load_preset(ROOT / "presets" / "demo.yaml")
    assert cfg.method.name == "rrd+kd"
    assert (cfg.method.tau_s, cfg.method.tau_t) == (0.04, 0.1)
    assert cfg.teacher.preset.endswith("demo_teacher.yaml") and Path(cfg.teacher.preset).is_absolute()
    teacher = load_preset(ROOT / "presets" / "demo_teacher.yaml")
    assert teacher.method.name == "none" and not teacher.distills


def test_defaults_follow_rrd_md(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("teacher: {checkpoint: t.pth, arch: resnet56}\ndata: {train_size: 20000}\n")
    cfg = load_preset(path)
    assert cfg.name == "p"  # the file name when the preset has none
    assert (cfg.method.tau_s, cfg.method.tau_t, cfg.method.feat_dim, cfg.method.queue_size) == (0.04, 0.1, 128, 16384)
    assert cfg.method.enqueue == "after" and cfg.method.train_teacher_head is False
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.05, 0.9, 5e-4)
    assert cfg.optim.milestones == [150, 180, 210] and cfg.train.epochs == 240 and cfg.train.batch_size == 64


@pytest.mark.parametrize("method", sorted(method_names()))
def test_each_method_gets_its_default_weights(tmp_path, method):
    path = tmp_path / "p.yaml"
    path.write_text(f"method: {{name: {method}, queue_size: 100}}\nteacher: {{checkpoint: t.pth, arch: resnet8}}\n")
    cfg = load_preset(path)
    assert {k: getattr(cfg.method, k) for k in ("gamma", "alpha", "beta")} == default_weights(method)


def test_overrides_apply_in_order_and_parse_types(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("method: {name: kd}\nteacher: {checkpoint: t.pth, arch: resnet8}\n")
    cfg = load_preset(
        path, ["method.kd_T=2", "optim.milestones=[3, 4]", "train.epochs=3", "train.epochs=4", "method.alpha=0.5"]
    )
    assert cfg.method.kd_T == 2.0 and isinstance(cfg.method.kd_T, float)
    assert cfg.optim.milestones == [3, 4] and cfg.train.epochs == 4 and cfg.method.alpha == 0.5
    assert cfg.method.gamma == default_weights("kd")["gamma"]  # unset weights keep the method default


def test_fingerprint_ignores_cosmetics_but_not_training(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("method: {name: none}\n")
    base = load_preset(path).fingerprint()
    assert load_preset(path, ["description=x", "train.device=cpu", "train.log_every=7"]).fingerprint() == base
    assert load_preset(path, ["train.epochs=3", "optim.milestones=[2]"]).fingerprint() != base


BAD = [
    ("method: {tua_s: 0.1}\n", [], "unknown key 'method.tua_s' (did you mean 'method.tau_s'?)"),
    ("train: {epochs: many}\n", [], "train.epochs must be an integer, got 'many'"),
    ("method: {tau_s: -0.1}\n", [], "method.tau_s must be > 0, got -0.1"),
    ("method: {tau_t: 0}\n", [], "method.tau_t must be > 0, got 0.0"),
    ("student: {arch: resnet9}\n", [], "student.arch: unknown value 'resnet9'"),
    ("data: {name: cifar1000}\n", [], "data.name: unknown value 'cifar1000'"),
    ("method: {name: rrd}\n", [], "needs exactly one of teacher.checkpoint, teacher.run or teacher.preset"),
    ("method: {name: none}\n", ["method.tau_s"], "--set method.tau_s: expected key.path=value"),
    ("method: {name: none}\n", ["optim.nope=1"], "unknown key 'optim.nope'"),
    ("method: {name: none}\n", ["train.batch_size=0"], "train.batch_size must be > 0, got 0"),
    ("method: {name: rrd, queue_size: 30000}\nteacher: {run: abc}\n", [], "method.queue_size (30000) is larger than the training set"),
    ("- just\n- a list\n", [], "a preset must be a mapping"),
    ("method: {enqueue: sometimes}\n", [], "method.enqueue: unknown value 'sometimes'"),
    ("optim: {milestones: [5, 3]}\n", [], "optim.milestones must be increasing"),
]


@pytest.mark.parametrize("text, overrides, expected", BAD)
def test_bad_presets_give_one_line_naming_file_and_key(tmp_path, text, overrides, expected):
    path = tmp_path / "bad.yaml"
    # A training set large enough for the default queue, unless the case is about data itself.
    prefix = "" if text.startswith(("data", "-")) else "data: {train_size: 20000}\n"
    path.write_text(prefix + text)
    with pytest.raises(ConfigError) as info:
        load_preset(path, overrides)
    message = str(info.value)
    assert expected in message
    assert str(path) in message and "\n" not in message


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmethod:\n  name: rrd\n  tau_s: [0.1\n")
    with pytest.raises(ConfigError) as info:
        load_preset(path)
    assert str(path) in str(info.value) and "line 5" in str(info.value) and "YAML syntax error" in str(info.value)


def test_missing_preset_file(tmp_path):
    with pytest.raises(ConfigError, match="preset file not found"):
        load_preset(tmp_path / "nope.yaml")


def test_missing_teacher_preset(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("method: {name: kd}\nteacher: {preset: ghost.yaml}\n")
    with pytest.raises(ConfigError, match="teacher.preset 'ghost.yaml' not found"):
        load_preset(path)


def test_scientific_notation_is_a_number_in_presets_and_overrides(tmp_path):
    # YAML 1.1 reads 1e-3 as a string (its floats need a dot and a signed exponent).
    path = tmp_path / "p.yaml"
    path.write_text("method: {name: none}\noptim: {lr: 1e-3, lr_decay: 1E-1}\n")
    cfg = load_preset(path, ["optim.weight_decay=5e-4", "method.tau_s=4.0e-2"])
    assert (cfg.optim.lr, cfg.optim.lr_decay, cfg.optim.weight_decay, cfg.method.tau_s) == (1e-3, 0.1, 5e-4, 0.04)
    assert load_preset(path, ["description=1e-3x", "group='1e-3'"]).group == "1e-3"  # quoted stays a string
