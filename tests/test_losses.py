"""The loss maths against float64 references of the formulas in RRD.md: values and gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rrdtui.losses import crd_scores, info_nce, kd_loss, nce_loss, relation_entropy, rrd_loss


def unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=g, dtype=torch.float64), dim=1)


def reference_kd(s, t, T):
    s, t = s.double(), t.double()
    p_t = torch.softmax(t / T, 1)
    return (T * T) * (p_t * (torch.log(p_t) - torch.log_softmax(s / T, 1))).sum(1).mean()


def reference_rrd(s, t, q, tau_s, tau_t):
    s, t, q = s.double(), t.double(), q.double()
    p_t = torch.exp(t @ q.T / tau_t)
    p_t = p_t / p_t.sum(1, keepdim=True)
    logits = s @ q.T / tau_s
    log_p_s = logits - torch.log(torch.exp(logits).sum(1, keepdim=True))
    return -(p_t * log_p_s).sum(1).mean()


def test_kd_value_and_gradient_match_float64_reference():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(8, 10, generator=g, requires_grad=True)
    t = torch.randn(8, 10, generator=g, requires_grad=True)
    loss = kd_loss(s, t, T=4.0)
    s64 = s.detach().double().requires_grad_()
    ref = reference_kd(s64, t.detach(), 4.0)
    assert torch.allclose(loss.double(), ref, rtol=1e-5)
    loss.backward()
    ref.backward()
    assert torch.allclose(s.grad.double(), s64.grad, rtol=1e-4, atol=1e-7)
    assert t.grad is None  # the teacher side is a detached target


def test_kd_is_zero_for_identical_logits():
    z = torch.randn(5, 7)
    assert kd_loss(z, z, 4.0).abs() < 1e-6


def test_rrd_value_and_gradient_match_float64_reference():
    s = unit(6, 16, 1).float().requires_grad_()
    t = unit(6, 16, 2).float().requires_grad_()
    q = unit(50, 16, 3).float().requires_grad_()
    loss = rrd_loss(s, t, q, tau_s=0.04, tau_t=0.1)
    s64 = s.detach().double().requires_grad_()
    ref = reference_rrd(s64, t.detach(), q.detach(), 0.04, 0.1)
    assert torch.allclose(loss.double(), ref, rtol=1e-5)
    loss.backward()
    ref.backward()
    assert torch.allclose(s.grad.double(), s64.grad, rtol=1e-4, atol=1e-6)
    assert t.grad is None and q.grad is None  # neither the teacher nor the memory gets a gradient


def test_rrd_is_kl_plus_teacher_entropy():
    s, t, q = unit(4, 8, 4), unit(4, 8, 5), unit(30, 8, 6)
    p_t = torch.softmax(t @ q.T / 0.1, 1)
    log_p_s = torch.log_softmax(s @ q.T / 0.04, 1)
    kl = (p_t * (torch.log(p_t) - log_p_s)).sum(1).mean()
    entropy = -(p_t * torch.log(p_t)).sum(1).mean()
    assert torch.allclose(rrd_loss(s, t, q, 0.04, 0.1), kl + entropy)
    assert torch.allclose(relation_entropy(t, q, 0.1), entropy)


def test_rrd_with_identical_sides_and_temperatures_has_zero_kl_and_zero_gradient():
    e = unit(5, 12, 7).requires_grad_()
    q = unit(40, 12, 8)
    loss = rrd_loss(e, e.detach(), q, 0.07, 0.07)
    entropy = relation_entropy(e.detach(), q, 0.07)
    assert torch.allclose(loss, entropy)  # KL part is zero: what is left is H(p_T)
    loss.backward()
    assert e.grad.abs().max() < 1e-10


def test_rrd_becomes_infonce_as_teacher_temperature_goes_to_zero():
    # enqueue "before": the batch's own teacher keys are in the queue; as tau_t -> 0, p_T is one-hot
    # on the own key (the most similar one, cosine 1), so RRD is InfoNCE at temperature tau_s.
    t = unit(6, 16, 9)
    s = F.normalize(t + 0.3 * unit(6, 16, 10), dim=1)
    others = unit(60, 16, 11)
    memory = torch.cat([others[:20], t, others[20:]])
    own = torch.arange(20, 26)
    got = rrd_loss(s, t, memory, tau_s=0.05, tau_t=1e-4)
    assert torch.allclose(got, info_nce(s, memory, own, tau=0.05), rtol=1e-6)


def test_rrd_is_stable_in_bf16_autocast():
    s, t, q = unit(64, 128, 12).float(), unit(64, 128, 13).float(), unit(16384, 128, 14).float()
    reference = rrd_loss(s, t, q, 0.04, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = rrd_loss(s.bfloat16(), t.bfloat16(), q.bfloat16(), 0.04, 0.1)
    assert got.dtype == torch.float32 and torch.isfinite(got)
    assert abs(got.item() - reference.item()) / reference.item() < 0.02


def test_crd_scores_and_nce_against_hand_computation():
    anchor = unit(3, 8, 15)
    rows = torch.stack([unit(5, 8, 16 + i) for i in range(3)])  # B x (K+1) x d
    scores = crd_scores(anchor, rows, T=0.07)
    expected = torch.exp(torch.einsum("bkd,bd->bk", rows, anchor) / 0.07)
    assert torch.allclose(scores, expected, rtol=1e-5)

    probs = torch.tensor([[0.5, 0.1, 0.2, 0.05, 0.3], [0.9, 0.01, 0.02, 0.03, 0.04]], dtype=torch.float64)
    n_data, k = 100, 4
    noise = k / n_data
    by_hand = 0.0
    for row in probs.tolist():
        by_hand -= torch.log(torch.tensor(row[0] / (row[0] + noise + 1e-7)))
        for p in row[1:]:
            by_hand -= torch.log(torch.tensor(noise / (p + noise + 1e-7)))
    assert torch.allclose(nce_loss(probs, n_data), (by_hand / 2).double())
