"""Pure loss functions: tensors in, tensor out, no state. The formulas of RRD.md.

Everything that turns similarities into probabilities runs in at least float32 with autocast off,
whatever the surrounding autocast dtype: a softmax over 16384 keys at temperature 0.04 spans a range
that bf16 cannot resolve (and under autocast a matmul is cast down even from float32 inputs).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def _full(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors to float32; float32 and float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _no_autocast(x: torch.Tensor):
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """Hinton KD: T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch.

    The teacher side is a detached target; T^2 keeps the gradient scale independent of T.
    """
    with _no_autocast(student_logits):
        log_p_s = F.log_softmax(_full(student_logits) / T, dim=1)
        log_p_t = F.log_softmax(_full(teacher_logits.detach()) / T, dim=1)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
        return kl.mean() * (T * T)


def relation_logits(emb: torch.Tensor, memory: torch.Tensor, tau: float) -> torch.Tensor:
    """Similarities of each embedding (B x d) to every memory key (K x d), over a temperature."""
    with _no_autocast(emb):
        emb, memory = _full(emb), _full(memory)
        return emb @ memory.to(emb.dtype).t() / tau


def rrd_loss(
    student_emb: torch.Tensor,
    teacher_emb: torch.Tensor,
    memory: torch.Tensor,
    tau_s: float,
    tau_t: float,
    detach_teacher: bool = True,
) -> torch.Tensor:
    """Relational Representation Distillation: mean_i [ -sum_k p_T(i,k) log p_S(i,k) ].

    p_T = softmax(t . Q^T / tau_t) is the target (detached unless the teacher head is trained),
    p_S = softmax(s . Q^T / tau_s). Embeddings are L2-normalised (B x d), memory is K x d and carries
    no gradient. Equals mean KL(p_T || p_S) + H(p_T); the entropy term gives the student no gradient.
    """
    memory = memory.detach()
    target = teacher_emb.detach() if detach_teacher else teacher_emb
    with _no_autocast(student_emb):
        p_t = F.softmax(relation_logits(target, memory, tau_t), dim=1)
        log_p_s = F.log_softmax(relation_logits(student_emb, memory, tau_s), dim=1)
        return -(p_t.to(log_p_s.dtype) * log_p_s).sum(dim=1).mean()


def relation_entropy(emb: torch.Tensor, memory: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean entropy (nats) of softmax(emb . Q^T / tau): how sharp one side's relations are."""
    with _no_autocast(emb):
        log_p = F.log_softmax(relation_logits(emb, memory, tau), dim=1)
        return -(log_p.exp() * log_p).sum(dim=1).mean()


def info_nce(student_emb: torch.Tensor, memory: torch.Tensor, positive: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE with memory rows `positive` (B indices) as the positives: the RRD limit tau_t -> 0."""
    with _no_autocast(student_emb):
        return F.cross_entropy(relation_logits(student_emb, memory, tau), positive)


# ---------------------------------------------------------------------------------------------
# CRD pieces (Tian et al., as in RepDistiller): scores against a memory bank and the NCE loss.
# ---------------------------------------------------------------------------------------------


def crd_scores(anchor: torch.Tensor, bank_rows: torch.Tensor, T: float) -> torch.Tensor:
    """Unnormalised scores exp(m . v / T) of each anchor v (B x d) with its rows m (B x (K+1) x d)."""
    with _no_autocast(anchor):
        anchor, bank_rows = _full(anchor), _full(bank_rows)
        return torch.exp(torch.bmm(bank_rows.to(anchor.dtype), anchor.unsqueeze(2)).squeeze(2) / T)


def nce_loss(probs: torch.Tensor, n_data: int, eps: float = 1e-7) -> torch.Tensor:
    """NCE with noise distribution 1/N over B x (K+1) normalised scores, the positive in column 0.

    The positive should be told apart from noise: log D1 = log(P / (P + K/N)); each negative should
    look like noise: log D0 = log((K/N) / (P_neg + K/N)). Summed over columns, averaged over rows.
    """
    k = probs.shape[1] - 1
    noise = k / n_data
    p_pos = probs[:, 0]
    log_d1 = torch.log(p_pos / (p_pos + noise + eps))
    p_neg = probs[:, 1:]
    log_d0 = torch.log(noise / (p_neg + noise + eps))
    return -(log_d1 + log_d0.sum(dim=1)).mean()


# ---------------------------------------------------------------------------------------------
# Baselines of the RRD table: one teacher-student pair each, unweighted (the method applies its
# weight and sums over layers). The maths follows RepDistiller's distiller_zoo (Tian et al.) and,
# for DKD, mdistiller; reductions, normalisations and epsilons are theirs. Every function runs in
# at least float32 with autocast off (float64 stays float64), and teacher tensors are detached
# targets unless stated otherwise.
# ---------------------------------------------------------------------------------------------


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both tensors in one dtype of at least float32 (the wider of the two)."""
    a, b = _full(a), _full(b)
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def match_spatial(f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring two B x C x H x W maps to one spatial size, as RepDistiller does before AT/FT/NST/VID.

    The map with the larger height is adaptive-average-pooled to the other's size; equal heights
    are left alone. (RepDistiller pools to (H, H), assuming square maps; here the target is the
    other map's (H, W), which is the same thing for square maps.)
    """
    h_s, h_t = f_s.shape[2], f_t.shape[2]
    if h_s > h_t:
        f_s = F.adaptive_avg_pool2d(f_s, tuple(f_t.shape[2:]))
    elif h_s < h_t:
        f_t = F.adaptive_avg_pool2d(f_t, tuple(f_s.shape[2:]))
    return f_s, f_t


def hint_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """FitNet: mean squared error between the regressed student map and the teacher map.

    The regressor (RepDistiller's ConvReg on hint layer 2) belongs to the method; the two maps
    must have the same shape here. Mean over every element, as nn.MSELoss.
    """
    with _no_autocast(f_s):
        s, t = _pair(f_s, f_t.detach())
        return F.mse_loss(s, t)


def _attention_map(f: torch.Tensor, p: float) -> torch.Tensor:
    """Per-sample spatial attention: channel mean of f^p, flattened, unit L2 norm (eps 1e-12)."""
    return F.normalize(f.pow(p).mean(dim=1).reshape(f.shape[0], -1), dim=1)


def at_loss(f_s: torch.Tensor, f_t: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Attention transfer for one pair of B x C x H x W maps (channel counts may differ).

    Each map becomes a unit vector of channel-averaged f^p over positions; the loss is the mean
    over B x HW of the squared difference. A larger map is first adaptive-pooled to the smaller
    one's size (see match_spatial), as RepDistiller's at_loss does.
    """
    with _no_autocast(f_s):
        s, t = _pair(f_s, f_t.detach())
        s, t = match_spatial(s, t)
        return (_attention_map(s, p) - _attention_map(t, p)).pow(2).mean()


def sp_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Similarity preserving: ||rownorm(S S^T) - rownorm(T T^T)||_F^2 / B^2.

    S and T are the batch's flattened maps (B x anything; the two sides may differ in size).
    Each row of a B x B Gram matrix is scaled to unit L2 norm (eps 1e-12).
    """
    with _no_autocast(f_s):
        s, t = _pair(f_s, f_t.detach())
        b = s.shape[0]
        s, t = s.reshape(b, -1), t.reshape(b, -1)
        g_s = F.normalize(s @ s.t(), dim=1)
        g_t = F.normalize(t @ t.t(), dim=1)
        return (g_t - g_s).pow(2).sum() / (b * b)


def cc_loss(e_s: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
    """Correlation congruence as RepDistiller's Correlation module computes it on B x d embeddings.

    With delta = |e_s - e_t|, the loss is the mean over consecutive batch rows i of
    sum_d delta[i, d] * delta[i + 1, d] (needs B >= 2). In RepDistiller both embeddings come from
    trainable LinearEmbed heads (feat_dim 128), so the teacher side is NOT detached here.
    """
    with _no_autocast(e_s):
        s, t = _pair(e_s, e_t)
        delta = (s - t).abs()
        return (delta[:-1] * delta[1:]).sum(dim=1).mean()


def vid_loss(
    pred_mean: torch.Tensor, log_scale: torch.Tensor, target: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """VID: Gaussian negative log-likelihood (without the constant) of the teacher map.

    pred_mean is the regressor's output (B x C x ...), log_scale a length-C parameter; the
    variance per channel is softplus(log_scale) + eps and the loss is the mean over every element
    of 0.5 * ((pred_mean - target)^2 / var + log var). RepDistiller pools the larger of the student
    input and the teacher map before its 1x1-conv regressor; here a target larger than pred_mean
    is pooled down to it, while a smaller target is an error (pool the student input instead).
    RepDistiller initialises log_scale to log(exp(5.0 - eps) - 1), i.e. an initial variance of 5.
    """
    with _no_autocast(pred_mean):
        mu, tgt = _pair(pred_mean, target.detach())
        if mu.dim() == 4 and tgt.shape[2:] != mu.shape[2:]:
            if tgt.shape[2] < mu.shape[2]:
                raise ValueError("vid_loss: pool the student input to the teacher size before the regressor")
            tgt = F.adaptive_avg_pool2d(tgt, tuple(mu.shape[2:]))
        var = F.softplus(log_scale.to(mu.dtype)) + eps
        var = var.reshape(1, -1, *([1] * (mu.dim() - 2)))
        return (0.5 * ((mu - tgt).pow(2) / var + torch.log(var))).mean()


def _rkd_pdist(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pairwise Euclidean distances via |a|^2 + |b|^2 - 2ab, clamped at eps, zero diagonal."""
    sq = e.pow(2).sum(dim=1)
    d2 = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * (e @ e.t())).clamp(min=eps)
    eye = torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
    return d2.sqrt().masked_fill(eye, 0.0)


def _rkd_angles(e: torch.Tensor) -> torch.Tensor:
    """B^3 cosines: [i, j, k] = cos of the angle at e_i between e_j - e_i and e_k - e_i (0 if degenerate)."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)


def rkd_loss(e_s: torch.Tensor, e_t: torch.Tensor, w_dist: float = 25.0, w_angle: float = 50.0) -> torch.Tensor:
    """Relational KD: w_dist * distance term + w_angle * angle term, as RepDistiller's RKDLoss.

    Inputs are flattened to B x d (the two sides may differ in d). Distance term: pairwise
    distances, each side divided by the mean of its positive entries, smooth L1 (beta 1) averaged
    over all B^2 entries. Angle term: smooth L1 between the B^3 cosines of both sides. The teacher
    side is computed without gradient. The weights 25/50 are RKDLoss's; the method's own weight
    (RepDistiller -b 1) comes on top.
    """
    with _no_autocast(e_s):
        s, t = _pair(e_s, e_t.detach())
        s, t = s.reshape(s.shape[0], -1), t.reshape(t.shape[0], -1)
        d_t = _rkd_pdist(t)
        d_t = d_t / d_t[d_t > 0].mean()
        d_s = _rkd_pdist(s)
        d_s = d_s / d_s[d_s > 0].mean()
        loss_d = F.smooth_l1_loss(d_s, d_t)
        loss_a = F.smooth_l1_loss(_rkd_angles(s), _rkd_angles(t))
        return w_dist * loss_d + w_angle * loss_a


def pkt_loss(f_s: torch.Tensor, f_t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Probabilistic knowledge transfer with the cosine kernel, as RepDistiller's PKT.

    Rows (flattened to B x d; d may differ between sides) are divided by (norm + eps), NaNs set to
    0; the cosine matrix is mapped to [0, 1] by (c + 1) / 2 and each row divided by its sum. The
    loss is mean over B x B of p_t * log((p_t + eps) / (p_s + eps)).
    """
    with _no_autocast(f_s):
        s, t = _pair(f_s, f_t.detach())

        def conditional(x: torch.Tensor) -> torch.Tensor:
            x = x.reshape(x.shape[0], -1)
            x = x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)
            x = torch.where(torch.isnan(x), torch.zeros_like(x), x)
            k = (x @ x.t() + 1.0) / 2.0
            return k / k.sum(dim=1, keepdim=True)

        p_s, p_t = conditional(s), conditional(t)
        return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


def ab_loss(source: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Activation boundaries: the alternative L2 on pre-activation maps, SUMMED over all elements.

    source is the connector's output on the student's pre-activation map, target the teacher's
    pre-activation map (same shape). Where the teacher neuron is on (target > 0) the student is
    pushed above +margin: (source - margin)^2 if source <= margin; where it is off, below -margin:
    (source + margin)^2 if source > -margin. The method must then scale layer i of n as
    RepDistiller's ABLoss does: * 2^(i - n + 1) / batch_size * 3 / 1000 (see ab_layer_scale).
    """
    with _no_autocast(source):
        s, t = _pair(source, target.detach())
        on = t > 0
        pull_up = (s - margin).pow(2) * (on & (s <= margin)).to(s.dtype)
        push_down = (s + margin).pow(2) * (~on & (s > -margin)).to(s.dtype)
        return (pull_up + push_down).sum()


def ab_layer_scale(layer: int, n_layers: int, batch_size: int) -> float:
    """RepDistiller's factor on ab_loss for layer `layer` (0-based) of n: 2^(i-n+1) / B * 3 / 1000."""
    return 2.0 ** (layer - n_layers + 1) / batch_size / 1000.0 * 3.0


def ft_loss(factor_s: torch.Tensor, factor_t: torch.Tensor, p: int = 1, power: float = 2.0) -> torch.Tensor:
    """Factor transfer between the translator's and the paraphraser's factors (B x C x H x W).

    As RepDistiller's FactorTransfer: a larger map is pooled to the smaller (match_spatial), each
    factor becomes the unit-L2 vector of its channel mean of f^power (power 2, RepDistiller's p1),
    and the loss is the mean of |difference|^p (p 1, RepDistiller's p2). (The FT paper normalises
    the whole flattened factor instead; RepDistiller's channel-mean form is the one followed here.)
    """
    with _no_autocast(factor_s):
        s, t = _pair(factor_s, factor_t.detach())
        s, t = match_spatial(s, t)
        diff = (_attention_map(s, power) - _attention_map(t, power)).abs()
        return diff.mean() if p == 1 else diff.pow(p).mean()


def fsp_matrix(bottom: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """FSP (Gram) matrix B x C_top x C_bottom: spatial mean of top_j * bottom_i.

    The map with the larger height is first adaptive-pooled to the other's size, as in
    RepDistiller's compute_fsp.
    """
    bottom, top = match_spatial(bottom, top)
    b = bottom.shape[0]
    bot = bottom.reshape(b, bottom.shape[1], -1)
    tp = top.reshape(b, top.shape[1], -1)
    return tp @ bot.transpose(1, 2) / bot.shape[2]


def fsp_loss(s_bottom: torch.Tensor, s_top: torch.Tensor, t_bottom: torch.Tensor, t_top: torch.Tensor) -> torch.Tensor:
    """Flow of solution procedure: mean squared difference of the student and teacher FSP matrices.

    One pair of consecutive stage outputs per side; student and teacher must have the same channel
    counts (RepDistiller raises otherwise). RepDistiller uses consecutive pairs of feat[:-1] and
    trains with this loss only in its init stage.
    """
    with _no_autocast(s_bottom):
        sb, tb = _pair(s_bottom, t_bottom.detach())
        st, tt = _pair(s_top, t_top.detach())
        dtype = torch.promote_types(sb.dtype, st.dtype)
        g_s = fsp_matrix(sb.to(dtype), st.to(dtype))
        g_t = fsp_matrix(tb.to(dtype), tt.to(dtype))
        return (g_s - g_t).pow(2).mean()


def nst_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Neuron selectivity transfer: squared MMD with the kernel k(x, y) = (x . y)^2.

    As RepDistiller's NSTLoss (full_loss): maps are matched in size (match_spatial), each
    channel's spatial response is flattened and L2-normalised, and the loss is
    mean k(t, t) (no gradient) + mean k(s, s) - 2 mean k(s, t), each mean over B and both channel
    indices (channel counts may differ).
    """
    with _no_autocast(f_s):
        s, t = _pair(f_s, f_t.detach())
        s, t = match_spatial(s, t)
        s = F.normalize(s.reshape(s.shape[0], s.shape[1], -1), dim=2)
        t = F.normalize(t.reshape(t.shape[0], t.shape[1], -1), dim=2)

        def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (b @ a.transpose(1, 2)).pow(2)

        return kernel(t, t).mean() + kernel(s, s).mean() - 2 * kernel(s, t).mean()


def dkd_loss(
    logits_s: torch.Tensor,
    logits_t: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    T: float = 4.0,
) -> torch.Tensor:
    """Decoupled KD: alpha * TCKD + beta * NCKD, as mdistiller's dkd_loss, without the warm-up.

    TCKD is KL between the binary (target class, all others) distributions of teacher and student
    at temperature T; NCKD is KL between the distributions over the non-target classes, obtained
    as mdistiller does by subtracting 1000 from the target logit (after dividing by T). Both are
    summed over classes, times T^2, averaged over the batch. The method multiplies by
    min(epoch / warmup, 1) (mdistiller: warmup 20 epochs). Binary log-probabilities are formed in
    log space (mdistiller takes log of the summed softmax; same value, no log(0)).
    """
    with _no_autocast(logits_s):
        s, t = _pair(logits_s, logits_t.detach())
        s, t = s / T, t / T
        gt = F.one_hot(target.reshape(-1), s.shape[1]).to(torch.bool)

        def binary_log_probs(z: torch.Tensor) -> torch.Tensor:
            total = torch.logsumexp(z, dim=1, keepdim=True)
            log_gt = (z.masked_select(gt).reshape(-1, 1)) - total
            log_rest = torch.logsumexp(z.masked_fill(gt, float("-inf")), dim=1, keepdim=True) - total
            return torch.cat([log_gt, log_rest], dim=1)

        def kl(log_p_t: torch.Tensor, log_p_s: torch.Tensor) -> torch.Tensor:
            return (log_p_t.exp() * (log_p_t - log_p_s)).sum() * (T * T) / s.shape[0]

        tckd = kl(binary_log_probs(t), binary_log_probs(s))
        shift = 1000.0 * gt.to(s.dtype)
        nckd = kl(F.log_softmax(t - shift, dim=1), F.log_softmax(s - shift, dim=1))
        return alpha * tckd + beta * nckd
