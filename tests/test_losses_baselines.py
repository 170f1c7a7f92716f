"""Baseline losses of the RRD table against float64 references written here from the formulas.

Each reference below is an independent re-derivation (loops over samples, pairs or channels,
explicit index sets, a hand-written adaptive pooling), not a copy of rrdtui/losses.py. Values and
gradients with respect to the student inputs are compared in float64 to 1e-8 relative.
"""

from __future__ import annotations

import math

import pytest
import torch

from rrdtui.losses import (
    ab_layer_scale,
    ab_loss,
    at_loss,
    cc_loss,
    dkd_loss,
    fsp_loss,
    fsp_matrix,
    ft_loss,
    hint_loss,
    nst_loss,
    pkt_loss,
    rkd_loss,
    sp_loss,
    vid_loss,
)

F64 = torch.float64


def rand(*shape: int, seed: int, scale: float = 1.0, grad: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=F64) * scale
    return x.requires_grad_(grad)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-8) -> None:
    assert actual.dtype == F64 and expected.dtype == F64
    assert actual.shape == expected.shape
    actual, expected = actual.detach(), expected.detach()
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    err = (actual - expected).abs() - rtol * expected.abs() - max(rtol * scale, 1e-15)
    assert float(err.max()) <= 0, f"max abs error {float((actual - expected).abs().max()):.3e} (scale {scale:.3e})"


def check(fn, ref, student: list[torch.Tensor], others: list, kwargs: dict | None = None) -> None:
    """fn(*student, *others) against ref(...) on detached float64 copies: value and student grads."""
    kwargs = kwargs or {}
    mine = [x.detach().clone().requires_grad_() for x in student]
    theirs = [x.detach().clone().requires_grad_() for x in student]
    loss = fn(*mine, *others, **kwargs)
    expected = ref(*theirs, *[o.detach() if torch.is_tensor(o) else o for o in others], **kwargs)
    assert loss.dim() == 0
    assert_close(loss, expected)
    loss.backward()
    expected.backward()
    for a, b in zip(mine, theirs):
        assert a.grad is not None
        assert_close(a.grad, b.grad)


def check_zero(fn, x: torch.Tensor, *rest, atol: float = 1e-12, grad_atol: float = 1e-11, **kwargs) -> None:
    """The loss of a student equal to its teacher is zero, and so is its gradient."""
    s = x.detach().clone().requires_grad_()
    loss = fn(s, x.detach().clone(), *rest, **kwargs)
    assert abs(float(loss.detach())) <= atol
    loss.backward()
    assert float(s.grad.abs().max()) <= grad_atol


# ---------------------------------------------------------------------------------------------
# Hand-written helpers of the references
# ---------------------------------------------------------------------------------------------


def ref_pool(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Adaptive average pooling by its definition: bin i covers [floor(iH/h), ceil((i+1)H/h))."""
    h, w = x.shape[2], x.shape[3]
    rows = []
    for i in range(out_h):
        h0, h1 = (i * h) // out_h, -((-(i + 1) * h) // out_h)
        cols = []
        for j in range(out_w):
            w0, w1 = (j * w) // out_w, -((-(j + 1) * w) // out_w)
            cols.append(x[:, :, h0:h1, w0:w1].mean(dim=(2, 3)))
        rows.append(torch.stack(cols, dim=-1))
    return torch.stack(rows, dim=-2)


def ref_match(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape[2] > b.shape[2]:
        return ref_pool(a, b.shape[2], b.shape[3]), b
    if a.shape[2] < b.shape[2]:
        return a, ref_pool(b, a.shape[2], a.shape[3])
    return a, b


def huber(x: torch.Tensor) -> torch.Tensor:
    """Smooth L1 with threshold 1, element by element."""
    return torch.where(x.abs() < 1, 0.5 * x * x, x.abs() - 0.5)


def test_ref_pool_agrees_with_torch_on_uneven_bins():
    x = rand(2, 3, 7, 5, seed=99)
    assert_close(ref_pool(x, 3, 4), torch.nn.functional.adaptive_avg_pool2d(x, (3, 4)))


# ---------------------------------------------------------------------------------------------
# FitNet
# ---------------------------------------------------------------------------------------------


def ref_hint(s, t):
    total = torch.zeros((), dtype=F64)
    for a, b in zip(s.reshape(-1), t.reshape(-1)):
        total = total + (a - b) ** 2
    return total / s.numel()


@pytest.mark.parametrize("shape", [(4, 3, 4, 4), (3, 8, 2, 2), (5, 16)])
def test_hint_matches_reference(shape):
    check(hint_loss, ref_hint, [rand(*shape, seed=1)], [rand(*shape, seed=2)])


def test_hint_zero_for_equal_maps():
    check_zero(hint_loss, rand(4, 3, 4, 4, seed=3))


# ---------------------------------------------------------------------------------------------
# AT
# ---------------------------------------------------------------------------------------------


def ref_at(f_s, f_t, p=2.0):
    f_s, f_t = ref_match(f_s, f_t)
    b = f_s.shape[0]
    total = torch.zeros((), dtype=F64)
    for i in range(b):
        qs = sum(f_s[i, c] ** p for c in range(f_s.shape[1])).reshape(-1) / f_s.shape[1]
        qt = sum(f_t[i, c] ** p for c in range(f_t.shape[1])).reshape(-1) / f_t.shape[1]
        qs = qs / torch.sqrt((qs * qs).sum())
        qt = qt / torch.sqrt((qt * qt).sum())
        total = total + ((qs - qt) ** 2).sum()
    return total / (b * f_s.shape[2] * f_s.shape[3])


@pytest.mark.parametrize(
    "s_shape,t_shape",
    [
        ((4, 3, 8, 8), (4, 5, 4, 4)),  # student larger: student pooled
        ((4, 6, 6, 6), (4, 2, 8, 8)),  # teacher larger, uneven bins
        ((3, 3, 5, 5), (3, 7, 5, 5)),  # same size, different channels
    ],
)
@pytest.mark.parametrize("p", [2.0, 4.0])
def test_at_matches_reference(s_shape, t_shape, p):
    check(at_loss, ref_at, [rand(*s_shape, seed=4)], [rand(*t_shape, seed=5), p])


def test_at_zero_for_equal_maps():
    check_zero(at_loss, rand(4, 3, 6, 6, seed=6))


# ---------------------------------------------------------------------------------------------
# SP
# ---------------------------------------------------------------------------------------------


def ref_sp(f_s, f_t):
    b = f_s.shape[0]
    xs, xt = f_s.reshape(b, -1), f_t.reshape(b, -1)
    total = torch.zeros((), dtype=F64)
    for i in range(b):
        gs = torch.stack([(xs[i] * xs[j]).sum() for j in range(b)])
        gt = torch.stack([(xt[i] * xt[j]).sum() for j in range(b)])
        gs = gs / torch.sqrt((gs * gs).sum())
        gt = gt / torch.sqrt((gt * gt).sum())
        total = total + ((gs - gt) ** 2).sum()
    return total / b**2


@pytest.mark.parametrize(
    "s_shape,t_shape",
    [((6, 3, 4, 4), (6, 8, 2, 2)), ((5, 16), (5, 128)), ((4, 128), (4, 16))],
)
def test_sp_matches_reference(s_shape, t_shape):
    check(sp_loss, ref_sp, [rand(*s_shape, seed=7)], [rand(*t_shape, seed=8)])


def test_sp_zero_for_equal_maps():
    check_zero(sp_loss, rand(6, 3, 4, 4, seed=9))


# ---------------------------------------------------------------------------------------------
# CC (teacher embedding trainable in RepDistiller: gradients on both sides)
# ---------------------------------------------------------------------------------------------


def ref_cc(e_s, e_t):
    b = e_s.shape[0]
    total = torch.zeros((), dtype=F64)
    for i in range(b - 1):
        total = total + ((e_s[i] - e_t[i]).abs() * (e_s[i + 1] - e_t[i + 1]).abs()).sum()
    return total / (b - 1)


@pytest.mark.parametrize("b,d", [(6, 16), (5, 128), (2, 16)])
def test_cc_matches_reference_for_both_embeddings(b, d):
    check(cc_loss, ref_cc, [rand(b, d, seed=10), rand(b, d, seed=11)], [])


# ---------------------------------------------------------------------------------------------
# VID
# ---------------------------------------------------------------------------------------------


def ref_vid(mu, log_scale, target, eps=1e-5):
    if mu.dim() == 4 and target.shape[2] > mu.shape[2]:
        target = ref_pool(target, mu.shape[2], mu.shape[3])
    total = torch.zeros((), dtype=F64)
    for c in range(mu.shape[1]):
        var = torch.log(1 + torch.exp(log_scale[c])) + eps
        total = total + (0.5 * ((mu[:, c] - target[:, c]) ** 2 / var + torch.log(var))).sum()
    return total / mu.numel()


@pytest.mark.parametrize(
    "mu_shape,t_shape",
    [((4, 3, 4, 4), (4, 3, 4, 4)), ((3, 5, 4, 4), (3, 5, 8, 8)), ((3, 6, 3, 3), (3, 6, 5, 5)), ((6, 16), (6, 16))],
)
def test_vid_matches_reference(mu_shape, t_shape):
    c = mu_shape[1]
    log_scale = rand(c, seed=12, scale=2.0)
    check(vid_loss, ref_vid, [rand(*mu_shape, seed=13), log_scale], [rand(*t_shape, seed=14)])
    check(vid_loss, ref_vid, [rand(*mu_shape, seed=13), log_scale], [rand(*t_shape, seed=14)], {"eps": 1e-3})


def test_vid_initial_variance_is_five_and_smaller_target_is_refused():
    eps = 1e-5
    log_scale = torch.full((3,), math.log(math.exp(5.0 - eps) - 1.0), dtype=F64)
    mu = torch.zeros(2, 3, 2, 2, dtype=F64)
    assert float(vid_loss(mu, log_scale, mu.clone())) == pytest.approx(0.5 * math.log(5.0), rel=1e-12)
    with pytest.raises(ValueError):
        vid_loss(torch.zeros(2, 3, 4, 4, dtype=F64), log_scale, torch.zeros(2, 3, 2, 2, dtype=F64))


# ---------------------------------------------------------------------------------------------
# RKD
# ---------------------------------------------------------------------------------------------


def ref_rkd(e_s, e_t, w_dist=25.0, w_angle=50.0):
    n = e_s.shape[0]
    xs, xt = e_s.reshape(n, -1), e_t.reshape(n, -1)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]

    def distances(x):
        d = torch.stack([torch.sqrt(((x[i] - x[j]) ** 2).sum()) for i, j in pairs])
        return d / d.mean()

    loss_d = huber(distances(xs) - distances(xt)).sum() / n**2  # the zero diagonal adds nothing

    def cosines(x, i):
        rows = []
        for j in range(n):
            if j == i:
                rows.append(torch.zeros(x.shape[1], dtype=F64))
            else:
                v = x[j] - x[i]
                rows.append(v / torch.sqrt((v * v).sum()))
        u = torch.stack(rows)
        return u @ u.T

    loss_a = sum(huber(cosines(xs, i) - cosines(xt, i)).sum() for i in range(n)) / n**3
    return w_dist * loss_d + w_angle * loss_a


@pytest.mark.parametrize("n,d_s,d_t", [(6, 16, 16), (7, 128, 16), (5, 16, 128)])
def test_rkd_matches_reference(n, d_s, d_t):
    check(rkd_loss, ref_rkd, [rand(n, d_s, seed=15)], [rand(n, d_t, seed=16, scale=3.0)])


def test_rkd_weights_and_flattening():
    s, t = rand(5, 2, 2, 4, seed=17), rand(5, 3, 2, 2, seed=18)
    check(rkd_loss, ref_rkd, [s], [t, 2.0, 0.5])


def test_rkd_zero_for_equal_embeddings():
    check_zero(rkd_loss, rand(6, 16, seed=19))


# ---------------------------------------------------------------------------------------------
# PKT
# ---------------------------------------------------------------------------------------------


def ref_pkt(f_s, f_t, eps=1e-7):
    b = f_s.shape[0]

    def probs(x):
        x = x.reshape(b, -1)
        norms = [torch.sqrt((x[i] * x[i]).sum()) + eps for i in range(b)]
        k = torch.stack(
            [torch.stack([((x[i] * x[j]).sum() / (norms[i] * norms[j]) + 1) / 2 for j in range(b)]) for i in range(b)]
        )
        return k / k.sum(dim=1, keepdim=True)

    ps, pt = probs(f_s), probs(f_t)
    return (pt * (torch.log(pt + eps) - torch.log(ps + eps))).sum() / b**2


@pytest.mark.parametrize("b,d_s,d_t", [(6, 16, 16), (5, 128, 16), (4, 16, 128)])
def test_pkt_matches_reference(b, d_s, d_t):
    check(pkt_loss, ref_pkt, [rand(b, d_s, seed=20)], [rand(b, d_t, seed=21)])
    check(pkt_loss, ref_pkt, [rand(b, d_s, seed=20)], [rand(b, d_t, seed=21)], {"eps": 1e-3})


def test_pkt_zero_for_equal_features():
    x = rand(6, 16, seed=22)
    # with the reference's eps the value is exactly zero and the gradient is O(eps) ...
    check_zero(pkt_loss, x, grad_atol=1e-6)
    # ... and without it the gradient vanishes as well
    check_zero(pkt_loss, x, eps=0.0)


# ---------------------------------------------------------------------------------------------
# AB
# ---------------------------------------------------------------------------------------------


def ref_ab(source, target, margin=1.0):
    total = torch.zeros((), dtype=F64)
    for s, t in zip(source.reshape(-1), target.reshape(-1)):
        if t > 0:
            if s <= margin:
                total = total + (s - margin) ** 2
        elif s > -margin:
            total = total + (s + margin) ** 2
    return total


@pytest.mark.parametrize("shape", [(3, 4, 3, 3), (2, 8, 2, 2)])
@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_ab_matches_reference(shape, margin):
    check(ab_loss, ref_ab, [rand(*shape, seed=23, scale=1.5)], [rand(*shape, seed=24), margin])


def test_ab_layer_scale_is_repdistillers():
    assert [ab_layer_scale(i, 3, 64) for i in range(3)] == pytest.approx(
        [0.25 * 3 / 64000, 0.5 * 3 / 64000, 1.0 * 3 / 64000], rel=1e-15
    )


# ---------------------------------------------------------------------------------------------
# FT
# ---------------------------------------------------------------------------------------------


def ref_ft(f_s, f_t, p=1, power=2.0):
    f_s, f_t = ref_match(f_s, f_t)
    b = f_s.shape[0]
    total = torch.zeros((), dtype=F64)
    for i in range(b):
        a_s = sum(f_s[i, c] ** power for c in range(f_s.shape[1])).reshape(-1) / f_s.shape[1]
        a_t = sum(f_t[i, c] ** power for c in range(f_t.shape[1])).reshape(-1) / f_t.shape[1]
        a_s = a_s / torch.sqrt((a_s**2).sum())
        a_t = a_t / torch.sqrt((a_t**2).sum())
        total = total + ((a_s - a_t).abs() ** p).sum()
    return total / (b * f_s.shape[2] * f_s.shape[3])


@pytest.mark.parametrize("s_shape,t_shape", [((4, 8, 4, 4), (4, 8, 4, 4)), ((3, 4, 8, 8), (3, 6, 4, 4))])
@pytest.mark.parametrize("p", [1, 2])
def test_ft_matches_reference(s_shape, t_shape, p):
    check(ft_loss, ref_ft, [rand(*s_shape, seed=25)], [rand(*t_shape, seed=26), p])


def test_ft_zero_for_equal_factors():
    check_zero(ft_loss, rand(4, 8, 4, 4, seed=27))


# ---------------------------------------------------------------------------------------------
# FSP
# ---------------------------------------------------------------------------------------------


def ref_fsp_matrix(bottom, top):
    bottom, top = ref_match(bottom, top)
    hw = bottom.shape[2] * bottom.shape[3]
    return torch.einsum("bihw,bjhw->bji", bottom, top) / hw


def ref_fsp(s_bottom, s_top, t_bottom, t_top):
    g_s, g_t = ref_fsp_matrix(s_bottom, s_top), ref_fsp_matrix(t_bottom, t_top)
    return ((g_s - g_t) ** 2).sum() / g_s.numel()


@pytest.mark.parametrize(
    "sb,st,tb,tt",
    [
        ((4, 3, 8, 8), (4, 5, 4, 4), (4, 3, 8, 8), (4, 5, 4, 4)),
        ((3, 4, 4, 4), (3, 6, 8, 8), (3, 4, 6, 6), (3, 6, 6, 6)),
    ],
)
def test_fsp_matches_reference(sb, st, tb, tt):
    check(fsp_loss, ref_fsp, [rand(*sb, seed=28), rand(*st, seed=29)], [rand(*tb, seed=30), rand(*tt, seed=31)])


def test_fsp_matrix_shape_and_zero_loss():
    a, b = rand(2, 3, 8, 8, seed=32), rand(2, 5, 4, 4, seed=33)
    assert fsp_matrix(a, b).shape == (2, 5, 3)
    assert_close(fsp_matrix(a, b), ref_fsp_matrix(a, b))
    sa, sb = a.clone().requires_grad_(), b.clone().requires_grad_()
    loss = fsp_loss(sa, sb, a.clone(), b.clone())
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert float(sa.grad.abs().max()) == 0.0 and float(sb.grad.abs().max()) == 0.0


# ---------------------------------------------------------------------------------------------
# NST
# ---------------------------------------------------------------------------------------------


def ref_nst(f_s, f_t):
    f_s, f_t = ref_match(f_s, f_t)
    b = f_s.shape[0]
    total = torch.zeros((), dtype=F64)
    for i in range(b):
        xs = [f_s[i, c].reshape(-1) for c in range(f_s.shape[1])]
        xt = [f_t[i, c].reshape(-1) for c in range(f_t.shape[1])]
        xs = [v / torch.sqrt((v * v).sum()) for v in xs]
        xt = [v / torch.sqrt((v * v).sum()) for v in xt]

        def mean_k(u, v):
            return sum(((a * c).sum()) ** 2 for a in u for c in v) / (len(u) * len(v))

        total = total + mean_k(xt, xt) + mean_k(xs, xs) - 2 * mean_k(xs, xt)
    return total / b


@pytest.mark.parametrize(
    "s_shape,t_shape", [((3, 4, 4, 4), (3, 6, 4, 4)), ((2, 5, 8, 8), (2, 3, 4, 4)), ((2, 3, 4, 4), (2, 4, 6, 6))]
)
def test_nst_matches_reference(s_shape, t_shape):
    check(nst_loss, ref_nst, [rand(*s_shape, seed=34)], [rand(*t_shape, seed=35)])


def test_nst_zero_for_equal_maps():
    check_zero(nst_loss, rand(3, 4, 4, 4, seed=36))


# ---------------------------------------------------------------------------------------------
# DKD
# ---------------------------------------------------------------------------------------------


def ref_dkd(z_s, z_t, target, alpha=1.0, beta=8.0, T=4.0):
    b, n = z_s.shape
    total = torch.zeros((), dtype=F64)
    for i in range(b):
        g = int(target[i])
        p_s, p_t = torch.softmax(z_s[i] / T, 0), torch.softmax(z_t[i] / T, 0)
        b_s = torch.stack([p_s[g], 1 - p_s[g]])
        b_t = torch.stack([p_t[g], 1 - p_t[g]])
        tckd = (b_t * torch.log(b_t / b_s)).sum()
        rest = [k for k in range(n) if k != g]
        q_s, q_t = torch.softmax(z_s[i, rest] / T, 0), torch.softmax(z_t[i, rest] / T, 0)
        nckd = (q_t * torch.log(q_t / q_s)).sum()
        total = total + alpha * tckd + beta * nckd
    return T * T * total / b


@pytest.mark.parametrize("n_cls", [10, 100])
@pytest.mark.parametrize("alpha,beta,T", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_matches_reference(n_cls, alpha, beta, T):
    b = 6
    target = torch.randint(0, n_cls, (b,), generator=torch.Generator().manual_seed(37))
    check(
        dkd_loss,
        ref_dkd,
        [rand(b, n_cls, seed=38, scale=3.0)],
        [rand(b, n_cls, seed=39, scale=3.0), target, alpha, beta, T],
    )


def test_dkd_zero_for_equal_logits():
    target = torch.tensor([0, 3, 9, 2])
    check_zero(dkd_loss, rand(4, 10, seed=40, scale=3.0), target)


# ---------------------------------------------------------------------------------------------
# Teachers are targets; bf16 under autocast gives float32 close to float64
# ---------------------------------------------------------------------------------------------


def cases():
    """(name, fn, student tensors, teacher-side tensors, other args), all float64."""
    tgt = torch.tensor([1, 0, 7, 3, 9, 2])
    return [
        ("hint", hint_loss, [rand(4, 3, 4, 4, seed=50)], [rand(4, 3, 4, 4, seed=51)], []),
        ("at", at_loss, [rand(4, 3, 8, 8, seed=52)], [rand(4, 5, 4, 4, seed=53)], []),
        ("sp", sp_loss, [rand(6, 3, 4, 4, seed=54)], [rand(6, 8, 2, 2, seed=55)], []),
        ("cc", cc_loss, [rand(6, 16, seed=56)], [rand(6, 16, seed=57)], []),
        ("vid", vid_loss, [rand(4, 3, 4, 4, seed=58), rand(3, seed=59)], [rand(4, 3, 8, 8, seed=60)], []),
        ("rkd", rkd_loss, [rand(6, 128, seed=61)], [rand(6, 16, seed=62)], []),
        ("pkt", pkt_loss, [rand(6, 128, seed=63)], [rand(6, 16, seed=64)], []),
        ("ab", ab_loss, [rand(3, 4, 3, 3, seed=65, scale=1.5)], [rand(3, 4, 3, 3, seed=66)], []),
        ("ft", ft_loss, [rand(3, 4, 8, 8, seed=67)], [rand(3, 6, 4, 4, seed=68)], []),
        ("nst", nst_loss, [rand(3, 4, 4, 4, seed=69)], [rand(3, 6, 4, 4, seed=70)], []),
        ("dkd", dkd_loss, [rand(6, 10, seed=71, scale=3.0)], [rand(6, 10, seed=72, scale=3.0)], [tgt]),
    ]


def call(fn, student, teacher, rest):
    if fn is vid_loss:  # (pred_mean, log_scale, target)
        return fn(student[0], student[1], teacher[0])
    return fn(*student, *teacher, *rest)


@pytest.mark.parametrize("case", cases(), ids=lambda c: c[0])
def test_teacher_side_gets_no_gradient_except_cc(case):
    name, fn, student, teacher, rest = case
    s = [x.clone().requires_grad_() for x in student]
    t = [x.clone().requires_grad_() for x in teacher]
    call(fn, s, t, rest).backward()
    assert all(x.grad is not None for x in s)
    if name == "cc":  # RepDistiller trains the teacher's embedding head too
        assert t[0].grad is not None
    else:
        assert all(x.grad is None for x in t)


def test_fsp_teacher_gets_no_gradient():
    s = [rand(2, 3, 4, 4, seed=73, grad=True), rand(2, 5, 4, 4, seed=74, grad=True)]
    t = [rand(2, 3, 4, 4, seed=75, grad=True), rand(2, 5, 4, 4, seed=76, grad=True)]
    fsp_loss(*s, *t).backward()
    assert s[0].grad is not None and t[0].grad is None and t[1].grad is None


@pytest.mark.parametrize("case", cases(), ids=lambda c: c[0])
def test_bf16_under_autocast_gives_float32_close_to_float64(case):
    _, fn, student, teacher, rest = case
    s16 = [x.to(torch.bfloat16).requires_grad_() for x in student]
    t16 = [x.to(torch.bfloat16) for x in teacher]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = call(fn, s16, t16, rest)
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in s16)
    exact = call(fn, [x.detach().double() for x in s16], [x.double() for x in t16], rest)
    assert float(loss.detach()) == pytest.approx(float(exact), rel=1e-4, abs=1e-7)


def test_fsp_bf16_under_autocast():
    parts = [rand(2, 3, 8, 8, seed=77), rand(2, 5, 4, 4, seed=78), rand(2, 3, 8, 8, seed=79), rand(2, 5, 4, 4, seed=80)]
    p16 = [x.to(torch.bfloat16) for x in parts]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fsp_loss(*p16)
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(float(fsp_loss(*[x.double() for x in p16])), rel=1e-4)


def test_float32_stays_float32():
    x, y = rand(4, 16, seed=81).float(), rand(4, 16, seed=82).float()
    for fn in (sp_loss, cc_loss, rkd_loss, pkt_loss, hint_loss):
        assert fn(x, y).dtype == torch.float32
