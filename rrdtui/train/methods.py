"""Distillation methods as small modules that own their parts and return named loss terms.

The loop hands every method the same things (student and teacher penultimate features and logits,
labels, sample indices), sums `weight * term` over what comes back, and never knows which method
runs. Terms are reported unweighted (train/loss_ce, train/loss_kd, train/loss_rrd, train/loss_crd);
train/loss is the weighted total the optimiser sees.

Memories are updated in `after_step`, after the backward pass: autograd keeps a reference to the
queue it multiplied by, so changing it in place before backward would corrupt the gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from rrdtui.config import MethodConfig
from rrdtui.losses import crd_scores, kd_loss, nce_loss, relation_entropy, rrd_loss
from rrdtui.train.memory import CRDMemory, OtherClassSampler, RelationQueue


@dataclass
class Forward:
    """One batch's outputs, as every method sees them."""

    student_feat: torch.Tensor
    student_logits: torch.Tensor
    teacher_feat: torch.Tensor | None
    teacher_logits: torch.Tensor | None
    labels: torch.Tensor
    index: torch.Tensor


class Embed(nn.Module):
    """Linear projection to the embedding size, then L2 normalisation."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.flatten(1)).float(), dim=1)


class Method(nn.Module):
    """Cross-entropy, plus KD when alpha > 0. The relational methods add their own term."""

    def __init__(self, cfg: MethodConfig):
        super().__init__()
        self.cfg = cfg
        self.weights = {"ce": cfg.gamma}
        if cfg.alpha > 0:
            self.weights["kd"] = cfg.alpha

    def terms(self, out: Forward) -> dict[str, torch.Tensor]:
        terms = {"ce": F.cross_entropy(out.student_logits.float(), out.labels)}
        if "kd" in self.weights:
            terms["kd"] = kd_loss(out.student_logits, out.teacher_logits, self.cfg.kd_T)
        return terms

    def after_step(self) -> None:
        """Update memories with the step's embeddings (after backward)."""

    def probe_stats(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Method-specific statistics on the fixed probe set."""
        return {}


class RRD(Method):
    """Relational Representation Distillation (RRD.md): relations to a FIFO queue of teacher keys."""

    def __init__(self, cfg: MethodConfig, student_dim: int, teacher_dim: int, generator: torch.Generator):
        super().__init__(cfg)
        self.weights["rrd"] = cfg.beta
        self.student_head = Embed(student_dim, cfg.feat_dim)
        self.teacher_head = Embed(teacher_dim, cfg.feat_dim)
        # The authors' code detaches the teacher side, so W_t stays a fixed random projection.
        self.teacher_head.requires_grad_(cfg.train_teacher_head)
        self.queue = RelationQueue(cfg.queue_size, cfg.feat_dim, generator=generator)
        self._pending: torch.Tensor | None = None

    def teacher_embedding(self, teacher_feat: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(self.cfg.train_teacher_head and torch.is_grad_enabled()):
            return self.teacher_head(teacher_feat)

    def terms(self, out: Forward) -> dict[str, torch.Tensor]:
        terms = super().terms(out)
        s = self.student_head(out.student_feat)
        t = self.teacher_embedding(out.teacher_feat)
        if self.cfg.enqueue == "before":
            # 2025 variant: the sample's own key is in the queue (InfoNCE as tau_t -> 0).
            self.queue.enqueue(t)
        else:
            self._pending = t.detach()
        terms["rrd"] = rrd_loss(
            s, t, self.queue.keys, self.cfg.tau_s, self.cfg.tau_t, detach_teacher=not self.cfg.train_teacher_head
        )
        return terms

    def after_step(self) -> None:
        if self._pending is not None:
            self.queue.enqueue(self._pending)
            self._pending = None

    @torch.no_grad()
    def probe_stats(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.student_head(student_feat)
        t = self.teacher_head(teacher_feat)
        return {
            "rrd/entropy_t": relation_entropy(t, self.queue.keys, self.cfg.tau_t),
            "rrd/entropy_s": relation_entropy(s, self.queue.keys, self.cfg.tau_s),
        }


class CRD(Method):
    """Contrastive Representation Distillation as in RepDistiller: NCE in both directions."""

    def __init__(
        self,
        cfg: MethodConfig,
        student_dim: int,
        teacher_dim: int,
        train_labels: torch.Tensor,
        num_classes: int,
        generator: torch.Generator,
    ):
        super().__init__(cfg)
        self.weights["crd"] = cfg.beta
        self.student_head = Embed(student_dim, cfg.feat_dim)
        self.teacher_head = Embed(teacher_dim, cfg.feat_dim)  # trained, unlike RRD's
        self.memory = CRDMemory(train_labels.shape[0], cfg.feat_dim, cfg.crd_momentum, generator=generator)
        self.sampler = OtherClassSampler(train_labels, num_classes)
        self.generator: torch.Generator | None = None  # the loop's device generator, set by the loop
        self._pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _normalise(self, scores: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # Z is fixed once, at the first step, without a host synchronisation.
        first = scores.detach().mean() * self.memory.n_data
        z.copy_(torch.where(z < 0, first, z))
        return scores / z

    def terms(self, out: Forward) -> dict[str, torch.Tensor]:
        terms = super().terms(out)
        v_s = self.student_head(out.student_feat)
        v_t = self.teacher_head(out.teacher_feat)
        idx = self.sampler.sample(out.index, self.cfg.crd_negatives, generator=self.generator)
        # Teacher anchor against the student bank, and student anchor against the teacher bank.
        scores_t = crd_scores(v_t, self.memory.student_bank[idx], self.cfg.crd_nce_t)
        scores_s = crd_scores(v_s, self.memory.teacher_bank[idx], self.cfg.crd_nce_t)
        probs_t = self._normalise(scores_t, self.memory.z_teacher)
        probs_s = self._normalise(scores_s, self.memory.z_student)
        n = self.memory.n_data
        terms["crd"] = nce_loss(probs_s, n) + nce_loss(probs_t, n)
        self._pending = (out.index, v_s.detach(), v_t.detach())
        return terms

    def after_step(self) -> None:
        if self._pending is not None:
            self.memory.update(*self._pending)
            self._pending = None


def build_method(
    cfg: MethodConfig,
    student_dim: int,
    teacher_dim: int | None,
    train_labels: torch.Tensor,
    num_classes: int,
    generator: torch.Generator,
) -> Method:
    """The method module for cfg.name (weights already resolved by config.validate)."""
    if cfg.name.startswith("rrd"):
        return RRD(cfg, student_dim, teacher_dim, generator)
    if cfg.name.startswith("crd"):
        return CRD(cfg, student_dim, teacher_dim, train_labels, num_classes, generator)
    return Method(cfg)  # "none" and "kd"
