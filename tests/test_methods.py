"""Method modules: which terms they return, the enqueue order, and what gets trained."""

from __future__ import annotations

import torch

from rrdtui.config import MethodConfig, validate, Config
from types import SimpleNamespace

from rrdtui.registry import method_info
from rrdtui.train.methods.base import Context, Forward, build_method


def method_config(**fields) -> MethodConfig:
    cfg = Config()
    cfg.teacher.checkpoint, cfg.teacher.arch = "t.pth", "resnet8"
    cfg.data.train_size = 20000
    for key, value in fields.items():
        setattr(cfg.method, key, value)
    validate(cfg)
    return cfg.method


def forward(batch: int = 8, dim: int = 16, classes: int = 5, seed: int = 0) -> Forward:
    g = torch.Generator().manual_seed(seed)
    return Forward(
        student_feat=torch.randn(batch, dim, generator=g, requires_grad=True),
        student_logits=torch.randn(batch, classes, generator=g, requires_grad=True),
        teacher_feat=torch.randn(batch, dim, generator=g),
        teacher_logits=torch.randn(batch, classes, generator=g),
        labels=torch.randint(0, classes, (batch,), generator=g),
        index=torch.arange(batch),
    )


def build(cfg: MethodConfig, n: int = 64, classes: int = 5):
    labels = torch.arange(n) % classes
    net = SimpleNamespace(feat_dim=16)  # these methods read only the penultimate feature's size
    return build_method(
        Context(cfg, method_info(cfg.name), net, net, labels, classes, 3, 32, 1, n // 8, 8, torch.Generator().manual_seed(0))
    )


def test_terms_and_weights_per_method():
    expected = {"none": {"ce"}, "kd": {"ce", "kd"}, "rrd": {"ce", "rrd"}, "rrd+kd": {"ce", "kd", "rrd"},
                "crd": {"ce", "crd"}, "crd+kd": {"ce", "kd", "crd"}}
    for name, terms in expected.items():
        method = build(method_config(name=name, queue_size=32, crd_negatives=16))
        assert set(method.terms(forward())) == terms == set(method.weights), name


def test_enqueue_after_keeps_own_keys_out_until_the_step_ends():
    method = build(method_config(name="rrd", queue_size=32))
    out = forward()
    method.terms(out)
    own = method.teacher_head(out.teacher_feat)
    # The batch's own keys are not in the queue while the loss is computed...
    assert (own @ method.queue.keys.T).max() < 0.999
    method.after_step()
    # ...and are there, at the front of the FIFO, once the step ends.
    assert torch.allclose(method.queue.keys[:8], own, atol=1e-6) and int(method.queue.pointer) == 8


def test_enqueue_before_puts_own_keys_in_the_queue_first():
    method = build(method_config(name="rrd", queue_size=32, enqueue="before"))
    out = forward()
    method.terms(out)
    own = method.teacher_head(out.teacher_feat)
    assert torch.allclose(method.queue.keys[:8], own, atol=1e-6)


def test_rrd_trains_the_student_head_only_unless_asked():
    out = forward()
    method = build(method_config(name="rrd", queue_size=32))
    method.terms(out)["rrd"].backward()
    assert method.student_head.linear.weight.grad is not None
    assert method.teacher_head.linear.weight.grad is None
    assert not any(p.requires_grad for p in method.teacher_head.parameters())
    trained = build(method_config(name="rrd", queue_size=32, train_teacher_head=True))
    trained.terms(forward())["rrd"].backward()
    assert trained.teacher_head.linear.weight.grad is not None


def test_crd_trains_both_heads_and_updates_its_banks_after_the_step():
    method = build(method_config(name="crd", crd_negatives=16))
    before = method.memory.student_bank.clone()
    method.terms(forward())["crd"].backward()
    assert method.student_head.linear.weight.grad is not None and method.teacher_head.linear.weight.grad is not None
    assert torch.equal(method.memory.student_bank, before)
    method.after_step()
    assert not torch.equal(method.memory.student_bank[:8], before[:8])
    assert torch.equal(method.memory.student_bank[8:], before[8:])
    assert float(method.memory.z_student) > 0  # Z fixed at the first step
