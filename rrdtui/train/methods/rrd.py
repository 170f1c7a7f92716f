"""Relational Representation Distillation: the student's relations to a FIFO queue of teacher keys
match the teacher's (the published 2024 code by default; the 2025 variant by method.enqueue and the
temperatures)."""

from __future__ import annotations

import torch

from rrdtui.losses import relation_entropy, rrd_loss
from rrdtui.train.memory import RelationQueue
from rrdtui.train.methods.base import Context, Embed, Forward, Method, MethodError

SPEC = {
    "name": "rrd",
    "title": "Relational Representation Distillation",
    "paper": "Giakoumoglou and Stathaki, 2024 (arXiv 2407.12073)",
    "formula": "L_rrd = mean_i -sum_k softmax(t_i.Q/tau_t)_k log softmax(s_i.Q/tau_s)_k, Q a FIFO queue of teacher embeddings",
    "weights": {"gamma": 1.0, "alpha": 0.0, "beta": 1.0},
    "features": ["feat"],
    "losses": ["rrd"],
    "paper_key": "RRD",
}


class RRD(Method):
    def __init__(self, ctx: Context):
        super().__init__(ctx)
        cfg = ctx.cfg
        n_train = ctx.train_labels.shape[0]
        if cfg.queue_size > n_train:
            raise MethodError(
                f"method.queue_size ({cfg.queue_size}) is larger than the training set ({n_train}): "
                "lower method.queue_size"
            )
        self.student_head = Embed(ctx.student.feat_dim, cfg.feat_dim)
        self.teacher_head = Embed(ctx.teacher.feat_dim, cfg.feat_dim)
        # The authors' code detaches the teacher side, so W_t stays a fixed random projection.
        self.teacher_head.requires_grad_(cfg.train_teacher_head)
        self.queue = RelationQueue(cfg.queue_size, cfg.feat_dim, generator=ctx.generator)
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
            self.queue.enqueue(self.gathered(t))
        else:
            self._pending = t.detach()
        terms["rrd"] = rrd_loss(
            s, t, self.queue.keys, self.cfg.tau_s, self.cfg.tau_t, detach_teacher=not self.cfg.train_teacher_head
        )
        return terms

    def after_step(self) -> None:
        if self._pending is not None:
            self.queue.enqueue(self.gathered(self._pending))
            self._pending = None

    @torch.no_grad()
    def probe_stats(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.student_head(student_feat)
        t = self.teacher_head(teacher_feat)
        return {
            "rrd/entropy_t": relation_entropy(t, self.queue.keys, self.cfg.tau_t),
            "rrd/entropy_s": relation_entropy(s, self.queue.keys, self.cfg.tau_s),
        }


DISTILLER = RRD
