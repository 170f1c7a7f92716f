"""FitNet, AT, SP, CC, VID and RKD: their registry entries, terms and weights, the parts they train,
the teacher-student pairs they accept, and real (tiny) training runs in process."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from rrdtui.config import Config, validate
from rrdtui.registry import method_info, method_names
from rrdtui.train.loop import TrainError
from rrdtui.train.methods.base import Context, Forward, MethodError, build_method
from rrdtui.train.models import build_model

from conftest import config, run

# name: (paper_key, beta of RepDistiller's scripts/run_cifar_distill.sh, features, terms)
EXPECTED = {
    "fitnet": ("FitNet", 100.0, ("maps",), ("hint",)),
    "at": ("AT", 1000.0, ("maps",), ("at",)),
    "sp": ("SP", 3000.0, ("maps",), ("sp",)),
    "cc": ("CC", 0.02, ("feat",), ("cc",)),
    "vid": ("VID", 1.0, ("maps",), ("vid",)),
    "rkd": ("RKD", 1.0, ("feat",), ("rkd",)),
}
NAMES = tuple(EXPECTED)


# ---------------------------------------------------------------------------------------------
# Registry and SPEC
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_registry_lists_the_method_with_its_paper_and_repdistiller_weights(name):
    paper_key, beta, features, losses = EXPECTED[name]
    info = method_info(name)
    assert name in method_names() and name + "+kd" in method_names()
    assert info.paper_key == paper_key and info.features == features and info.losses == losses
    assert info.weights == {"gamma": 1.0, "alpha": 0.0, "beta": beta}
    assert info.title and info.formula and "\n" not in info.formula
    assert "arXiv" in info.paper and info.first_stage is None  # all one-stage, as in RepDistiller's CIFAR runs
    combo = method_info(name + "+kd")
    assert combo.weights == {"gamma": 1.0, "alpha": 1.0, "beta": beta}
    assert combo.paper_key == paper_key + "+KD" and combo.terms == ("ce", "kd") + losses


def test_rkd_weights_and_fitnet_hint_layer_are_options():
    assert method_info("rkd").options == {"w_dist": 25.0, "w_angle": 50.0}
    assert method_info("fitnet").options == {"hint_layer": 2}
    for name in ("at", "sp", "cc", "vid"):
        assert method_info(name).options == {}


# ---------------------------------------------------------------------------------------------
# Built on real networks, one batch, no training
# ---------------------------------------------------------------------------------------------


def method_config(name: str, teacher_arch: str = "resnet14", **options):
    cfg = Config()
    cfg.teacher.checkpoint, cfg.teacher.arch = "t.pth", teacher_arch
    cfg.method.name = name
    cfg.method.options = options
    validate(cfg)
    return cfg.method


_NETS: dict[str, nn.Module] = {}


def net(arch: str) -> nn.Module:
    if arch not in _NETS:
        torch.manual_seed(0)
        _NETS[arch] = build_model(arch, 4)
    return _NETS[arch]


def make(name: str, student: nn.Module, teacher: nn.Module, **options):
    cfg = method_config(name, **options)
    ctx = Context(cfg, method_info(name), student, teacher, torch.arange(64) % 4, 4, 3, 32, 1, 2, 8,
                  torch.Generator().manual_seed(0))
    return build_method(ctx)


def batch(student: nn.Module, teacher: nn.Module, b: int = 8) -> Forward:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 3, 32, 32, generator=g)
    s_maps, s_feat, s_logits = student.forward_with_maps(x)
    with torch.no_grad():
        t_maps, t_feat, t_logits = teacher.forward_with_maps(x)
    y = torch.randint(0, 4, (b,), generator=g)
    return Forward(s_feat, s_logits, t_feat, t_logits, y, torch.arange(b), 0, 0, s_maps, t_maps)


@pytest.mark.parametrize("name", NAMES + ("vid+kd",))
def test_terms_and_weights_are_the_specs(name):
    method = make(name, net("resnet8"), net("resnet14"))
    base = name.removesuffix("+kd")
    beta = EXPECTED[base][1]
    expected = {"ce": 1.0, EXPECTED[base][3][0]: beta} | ({"kd": 1.0} if name.endswith("+kd") else {})
    assert method.weights == expected
    terms = method.terms(batch(net("resnet8"), net("resnet14")))
    assert set(terms) == set(expected)
    assert all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())
    assert method.wants_maps == ("maps" in EXPECTED[base][2]) and not method.preact


def test_the_trained_parts_get_gradients_and_the_teacher_none():
    student, teacher = net("resnet8"), net("resnet14")
    trained = {"fitnet": ["regressor"], "cc": ["student_embed", "teacher_embed"], "vid": ["regressors"]}
    for name in NAMES:
        method = make(name, student, teacher)
        student.zero_grad(set_to_none=True)
        teacher.zero_grad(set_to_none=True)
        term = EXPECTED[name][3][0]
        method.terms(batch(student, teacher))[term].backward()
        parts = trained.get(name, [])
        assert {n.split(".")[0] for n, _ in method.named_parameters()} == set(parts), name
        for n, p in method.named_parameters():
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, (name, n)
        assert any(p.grad is not None for p in student.parameters()), name
        assert all(p.grad is None for p in teacher.parameters()), name


def test_vid_regressors_are_repdistillers():
    method = make("vid", net("resnet8"), net("wrn_16_2"))
    # Maps after the stem: resnet8 16, 32, 64 channels; wrn_16_2 32, 64, 128.
    assert len(method.regressors) == 3
    reg = method.regressors[1]
    convs = [m for m in reg.regressor if isinstance(m, nn.Conv2d)]
    # 1x1 convolutions without bias, student -> teacher width -> teacher width -> teacher width.
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.bias) for c in convs] == [
        (32, 64, (1, 1), None), (64, 64, (1, 1), None), (64, 64, (1, 1), None)]
    assert sum(isinstance(m, nn.ReLU) for m in reg.regressor) == 2
    # softplus(log_scale) + eps is RepDistiller's initial variance, 5.
    variance = torch.nn.functional.softplus(reg.log_scale.detach()) + 1e-5
    assert reg.log_scale.shape == (64,) and torch.allclose(variance, torch.full((64,), 5.0))
    assert math.isclose(float(reg.log_scale[0].detach()), math.log(math.exp(5.0 - 1e-5) - 1.0), rel_tol=1e-6)


# Cross-family pairs (teacher, student): vgg has five maps against resnet's four, other sizes.
PAIRS = [("resnet14", "vgg8"), ("vgg8", "resnet8"), ("resnet14", "MobileNetV2"), ("wrn_16_2", "ShuffleV1")]


@pytest.mark.parametrize("teacher_arch, student_arch", PAIRS, ids=[f"{t}-{s}" for t, s in PAIRS])
def test_cross_family_pairs_zip_the_stage_maps_as_repdistiller(teacher_arch, student_arch):
    student, teacher = net(student_arch), net(teacher_arch)
    out = batch(student, teacher, b=4)
    pairs = min(len(out.student_maps), len(out.teacher_maps)) - 1
    fitnet = make("fitnet", student, teacher)
    assert fitnet.regressor(out.student_maps[2]).shape == out.teacher_maps[2].shape
    vid = make("vid", student, teacher)
    assert len(vid.regressors) == pairs
    for name in NAMES:
        terms = make(name, student, teacher).terms(out)
        assert torch.isfinite(terms[EXPECTED[name][3][0]]), name


def test_at_sums_one_term_per_zipped_pair():
    from rrdtui.losses import at_loss

    student, teacher = net("vgg8"), net("resnet14")
    out = batch(student, teacher, b=4)
    assert len(out.student_maps) == 5 and len(out.teacher_maps) == 4
    expected = sum(at_loss(s, t) for s, t in zip(out.student_maps[1:4], out.teacher_maps[1:4]))
    assert torch.allclose(make("at", student, teacher).terms(out)["at"], expected)


class Pyramid(nn.Module):
    """A stand-in network whose maps have the given (C, H, W) shapes (for pairs no zoo model makes)."""

    def __init__(self, shapes: list[tuple[int, int, int]], feat_dim: int = 8):
        super().__init__()
        self.shapes = shapes
        self.feat_dim = feat_dim
        self.scale = nn.Parameter(torch.ones(()))
        self.fc = nn.Linear(feat_dim, 4)

    def forward_with_maps(self, x: torch.Tensor, preact: bool = False):
        maps = [self.scale * torch.ones(x.shape[0], *shape) for shape in self.shapes]
        feat = self.scale * torch.ones(x.shape[0], self.feat_dim)
        return maps, feat, self.fc(feat)


def test_fitnet_wrong_pairing_is_a_one_line_method_error():
    # A student whose map 2 is 4x4 against resnet14's 16x16: ConvReg takes only x2, /2 or larger.
    student = Pyramid([(8, 16, 16), (8, 8, 8), (16, 4, 4), (32, 2, 2)])
    with pytest.raises(MethodError) as err:
        make("fitnet", student, net("resnet14"))
    message = str(err.value)
    assert "\n" not in message and "16x4x4" in message and "32x16x16" in message and "hint_layer" in message
    # The same student works from another hint layer where the sizes allow it (map 3: 2x2 -> 8x8 does not).
    with pytest.raises(MethodError, match="32x2x2"):
        make("fitnet", student, net("resnet14"), hint_layer=3)
    # Non-square maps whose width cannot come out right are refused too.
    wide = Pyramid([(8, 32, 32), (8, 32, 32), (16, 16, 8), (32, 8, 8)])
    with pytest.raises(MethodError, match="16x16x8"):
        make("fitnet", wide, net("resnet14"))


def test_fitnet_hint_layer_out_of_range_names_the_choices():
    with pytest.raises(MethodError, match=r"hint_layer is 4 .* 4 maps .* from 0 to 3") as err:
        make("fitnet", net("resnet8"), net("resnet14"), hint_layer=4)
    assert "\n" not in str(err.value)
    method = make("fitnet", net("resnet8"), net("resnet14"), hint_layer=3)
    out = batch(net("resnet8"), net("resnet14"))
    assert method.regressor(out.student_maps[3]).shape == out.teacher_maps[3].shape


def test_rkd_reads_its_weights_from_the_options():
    from rrdtui.losses import rkd_loss

    student, teacher = net("resnet8"), net("resnet14")
    out = batch(student, teacher)
    method = make("rkd", student, teacher, w_dist=1.0, w_angle=0.0)
    expected = rkd_loss(out.student_feat, out.teacher_feat, 1.0, 0.0)
    assert torch.allclose(method.terms(out)["rkd"], expected)


# ---------------------------------------------------------------------------------------------
# Real training runs on the tiny synthetic data
# ---------------------------------------------------------------------------------------------


# Each method from the resnet14 teacher to a resnet8 student, one +kd combination, and one cross-family
# run: a vgg8 student (five maps, half the teacher's map-2 size: a transposed-conv regressor).
# VID at its default weight (1) moves its learned variances too slowly for 18 steps to show a fall
# (its loss is mostly the log-variance term, starting at log 5), so its run weights the term by 30.
RUNS = [(name, "resnet8", {}) for name in NAMES if name != "vid"] + [
    ("vid", "resnet8", {"beta": 30.0}),
    ("at+kd", "resnet8", {}),
    ("fitnet", "vgg8", {}),
]


@pytest.mark.parametrize("method, student, extra", RUNS, ids=[f"{m}-{s}" for m, s, _ in RUNS])
def test_training_completes_and_the_distillation_term_falls(tmp_path, teacher_file, method, student, extra):
    cfg = config(method, teacher={"checkpoint": teacher_file, "arch": "resnet14"}, student={"arch": student},
                 method={"name": method, **extra})
    store, run_id, outcome = run(tmp_path, cfg, teacher_path=teacher_file)
    assert outcome.status == "completed"
    term = EXPECTED[method.removesuffix("+kd")][3][0]
    values = [v for _, _, v in store.series(run_id, f"train/loss_{term}")]
    assert len(values) >= 6 and all(math.isfinite(v) for v in values)
    assert sum(values[-3:]) / 3 < sum(values[:3]) / 3, f"train/loss_{term} did not fall: {values}"
    latest = store.latest(run_id)
    assert ("train/loss_kd" in latest) == method.endswith("+kd")
    assert 0 <= latest["val/acc"] <= 100
    # The method's trained parts are checkpointed with the run.
    state = torch.load(tmp_path / "runs" / run_id / "last.pt", weights_only=True)
    if method in ("fitnet", "vid", "cc"):
        assert any(k.startswith(("regressor", "student_embed")) for k in state["method"])


def test_a_hint_layer_the_networks_lack_stops_the_run_with_one_line(tmp_path, teacher_file):
    cfg = config("fitnet", teacher={"checkpoint": teacher_file, "arch": "resnet14"}, student={"arch": "resnet8"},
                 method={"name": "fitnet", "options": {"hint_layer": 9}})
    with pytest.raises(TrainError, match=r"^method fitnet: method.options.hint_layer is 9") as err:
        run(tmp_path, cfg, teacher_path=teacher_file)
    assert "\n" not in str(err.value)
