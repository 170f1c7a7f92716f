"""RRD's queue, CRD's sampler and banks, and the similarity statistics on inputs with known answers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rrdtui.train.memory import CRDMemory, OtherClassSampler, RelationQueue
from rrdtui.train import stats


def test_queue_starts_with_unit_rows_and_wraps_around():
    queue = RelationQueue(size=10, dim=4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(queue.keys.norm(dim=1), torch.ones(10))
    batches = [torch.full((4, 4), float(i)) for i in range(1, 4)]  # 12 rows into 10 slots
    for b in batches:
        queue.enqueue(b)
    assert int(queue.pointer) == 2
    assert queue.keys[:2].eq(3).all()  # the third batch wrapped to the start
    assert queue.keys[2:4].eq(1).all() and queue.keys[4:8].eq(2).all() and queue.keys[8:10].eq(3).all()


def test_queue_state_round_trips_through_a_checkpoint(tmp_path):
    queue = RelationQueue(size=7, dim=3)
    queue.enqueue(torch.randn(5, 3))
    torch.save(queue.state_dict(), tmp_path / "q.pt")
    other = RelationQueue(size=7, dim=3)
    other.load_state_dict(torch.load(tmp_path / "q.pt", weights_only=True))
    assert torch.equal(other.keys, queue.keys) and int(other.pointer) == 5


def test_crd_sampler_never_draws_a_same_class_negative():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (300,), generator=g)
    sampler = OtherClassSampler(labels, 5)
    index = torch.arange(300)
    drawn = sampler.sample(index, k=200, generator=g)
    assert drawn.shape == (300, 201)
    assert torch.equal(drawn[:, 0], index)  # the positive is the sample itself
    assert (labels[drawn[:, 1:]] != labels[index][:, None]).all()
    # Uniform over the other classes' samples: every eligible index gets drawn.
    assert len(torch.unique(drawn[labels[index] == 0][:, 1:])) == int((labels != 0).sum())


def test_crd_memory_update_is_momentum_then_renormalise():
    mem = CRDMemory(n_data=6, dim=4, momentum=0.5)
    before = mem.student_bank[2].clone()
    emb = F.normalize(torch.randn(1, 4), dim=1)
    mem.update(torch.tensor([2]), emb, emb)
    expected = F.normalize(before * 0.5 + emb[0] * 0.5, dim=0)
    assert torch.allclose(mem.student_bank[2], expected) and torch.allclose(mem.teacher_bank[2].norm(), torch.tensor(1.0))


def test_identical_models_are_perfectly_similar():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(64, 32, generator=g)
    logits = torch.randn(64, 10, generator=g)
    labels = torch.randint(0, 10, (64,), generator=g)
    out = stats.similarity_stats(feat, logits, feat, logits, labels, 10)
    assert out["sim/agreement"] == 100
    assert abs(out["sim/kl"]) < 1e-12
    assert abs(out["sim/cka"] - 1) < 1e-12
    assert abs(out["sim/relation_corr"] - 1) < 1e-12
    assert out["sim/logit_corr_diff"].abs() < 1e-12


def test_statistics_on_hand_made_inputs():
    student = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    teacher = torch.tensor([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    assert stats.agreement(student, teacher) == 75
    p_t, p_s = torch.softmax(teacher.double(), 1), torch.softmax(student.double(), 1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(1).mean()
    assert torch.allclose(stats.kl_teacher_student(student, teacher), kl)
    # CKA is invariant to rotations and isotropic scaling of either side, and ~0 for unrelated features.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 16, generator=g)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    assert abs(stats.linear_cka(x, 3 * x @ rotation) - 1) < 1e-10
    assert stats.linear_cka(x, torch.randn(200, 16, generator=g)) < 0.15
    # Relation correlation ignores per-sample scale (cosine similarities).
    scales = torch.rand(200, 1, generator=g) + 0.5
    assert abs(stats.relation_correlation(x, x * scales) - 1) < 1e-10


def test_logit_correlation_difference_uses_present_classes_only():
    g = torch.Generator().manual_seed(2)
    labels = torch.tensor([0, 0, 1, 1, 3, 3])  # class 2 is absent from the probe
    teacher = torch.randn(6, 4, generator=g)
    diff = stats.logit_correlation_difference(teacher, teacher, labels, 4)
    assert diff.shape == (3, 3) and torch.isfinite(diff).all() and diff.abs().max() < 1e-12
    student = torch.randn(6, 4, generator=g)
    assert stats.logit_correlation_difference(student, teacher, labels, 4).mean() > 0.05
