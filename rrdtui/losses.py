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
