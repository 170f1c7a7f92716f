"""Teacher-student similarity statistics on a fixed probe set (RRD.md, "what users watch").

Pure functions of features, logits and labels, computed in float64 on whatever device the tensors
are on (the probe set is small, so precision is cheap here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Top-1 agreement between teacher and student, in percent."""
    return (student_logits.argmax(1) == teacher_logits.argmax(1)).double().mean() * 100


def kl_teacher_student(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_teacher || p_student) at temperature 1, averaged over samples (nats)."""
    log_p_t = F.log_softmax(teacher_logits.double(), dim=1)
    log_p_s = F.log_softmax(student_logits.double(), dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean()


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA between two feature sets (n x d1, n x d2): 1 for identical up to rotation/scale."""
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    cross = (y.t() @ x).pow(2).sum()
    return cross / ((x.t() @ x).norm() * (y.t() @ y).norm()).clamp_min(1e-30)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean()
    b = b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-30)


def relation_correlation(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Correlation between the two models' pairwise cosine-similarity matrices (off-diagonal)."""
    s = F.normalize(student_feat.double(), dim=1)
    t = F.normalize(teacher_feat.double(), dim=1)
    n = s.shape[0]
    upper = torch.triu_indices(n, n, offset=1, device=s.device)
    return _pearson((s @ s.t())[upper[0], upper[1]], (t @ t.t())[upper[0], upper[1]])


def class_mean_logit_correlation(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C x C correlation between class-mean logit vectors; classes absent from the probe give NaN rows."""
    logits = logits.double()
    sums = torch.zeros(num_classes, logits.shape[1], dtype=torch.float64, device=logits.device)
    sums.index_add_(0, labels, logits)
    counts = torch.bincount(labels, minlength=num_classes).double()
    means = sums / counts[:, None]
    centred = means - means.mean(1, keepdim=True)
    normed = centred / centred.norm(dim=1, keepdim=True)
    return normed @ normed.t()


def logit_correlation_difference(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """|corr_T - corr_S| of class-mean logits (the CRD/RRD papers' figure), over present classes."""
    present = torch.bincount(labels, minlength=num_classes) > 0
    corr_t = class_mean_logit_correlation(teacher_logits, labels, num_classes)[present][:, present]
    corr_s = class_mean_logit_correlation(student_logits, labels, num_classes)[present][:, present]
    return (corr_t - corr_s).abs()


def similarity_stats(
    student_feat: torch.Tensor,
    student_logits: torch.Tensor,
    teacher_feat: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
) -> dict[str, torch.Tensor]:
    """All the sim/* metrics of one probe evaluation (0-dim tensors, read by the caller at once)."""
    return {
        "sim/agreement": agreement(student_logits, teacher_logits),
        "sim/kl": kl_teacher_student(student_logits, teacher_logits),
        "sim/cka": linear_cka(student_feat, teacher_feat),
        "sim/relation_corr": relation_correlation(student_feat, teacher_feat),
        "sim/logit_corr_diff": logit_correlation_difference(student_logits, teacher_logits, labels, num_classes).mean(),
    }
