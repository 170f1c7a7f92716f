"""Contrastive Representation Distillation, as RepDistiller computes it: NCE in both directions
against momentum memory banks, with negatives drawn from other classes."""

from __future__ import annotations

import torch

from rrdtui.losses import crd_scores, nce_loss
from rrdtui.train.memory import CRDMemory, OtherClassSampler
from rrdtui.train.methods.base import Context, Embed, Forward, Method, MethodError

SPEC = {
    "name": "crd",
    "title": "Contrastive Representation Distillation",
    "paper": "Tian, Krishnan and Isola, ICLR 2020 (arXiv 1910.10699)",
    "formula": "L_crd = NCE(v_s vs teacher bank) + NCE(v_t vs student bank), K negatives of other classes, Z fixed at step 1",
    "weights": {"gamma": 1.0, "alpha": 0.0, "beta": 0.8},
    "features": ["feat"],
    "losses": ["crd"],
    "paper_key": "CRD",
}


class CRD(Method):
    def __init__(self, ctx: Context):
        super().__init__(ctx)
        cfg = ctx.cfg
        labels = ctx.train_labels
        n_train = labels.shape[0]
        largest_class = int(torch.bincount(labels.long().cpu()).max())
        if n_train - largest_class < 1:
            raise MethodError("CRD needs samples of more than one class in the training set")
        self.student_head = Embed(ctx.student.feat_dim, cfg.feat_dim)
        self.teacher_head = Embed(ctx.teacher.feat_dim, cfg.feat_dim)  # trained, unlike RRD's
        self.memory = CRDMemory(n_train, cfg.feat_dim, cfg.crd_momentum, generator=ctx.generator)
        self.sampler = OtherClassSampler(labels, ctx.num_classes)
        self.generator: torch.Generator | None = None  # the loop's device generator, set by the loop
        self._pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _normalise(self, scores: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # Z is fixed once, at the first step, without a host synchronisation; from the global batch's
        # mean when the memory is shared (equal shares: the mean of the ranks' means).
        mean = scores.detach().mean()
        if self.cfg.gather and self.group.world > 1:
            mean = self.group.sum(mean.reshape(1)).squeeze(0) / self.group.world
        first = mean * self.memory.n_data
        z.copy_(torch.where(z < 0, first, z))
        return scores / z

    def terms(self, out: Forward) -> dict[str, torch.Tensor]:
        terms = super().terms(out)
        v_s = self.student_head(out.student_feat)
        v_t = self.teacher_head(out.teacher_feat)
        idx = self._negatives(out.index)
        # Teacher anchor against the student bank, and student anchor against the teacher bank.
        scores_t = crd_scores(v_t, self.memory.student_bank[idx], self.cfg.crd_nce_t)
        scores_s = crd_scores(v_s, self.memory.teacher_bank[idx], self.cfg.crd_nce_t)
        probs_t = self._normalise(scores_t, self.memory.z_teacher)
        probs_s = self._normalise(scores_s, self.memory.z_student)
        n = self.memory.n_data
        terms["crd"] = nce_loss(probs_s, n) + nce_loss(probs_t, n)
        self._pending = (out.index, v_s.detach(), v_t.detach())
        return terms

    def _negatives(self, index: torch.Tensor) -> torch.Tensor:
        if not (self.cfg.gather and self.group.world > 1):
            return self.sampler.sample(index, self.cfg.crd_negatives, generator=self.generator)
        # Drawn for the global batch with the generator every rank shares, as one process draws
        # them; this rank's rows are kept.
        first = self.group.rank * index.shape[0]
        drawn = self.sampler.sample(self.group.gather(index), self.cfg.crd_negatives, generator=self.generator)
        return drawn[first : first + index.shape[0]]

    def after_step(self) -> None:
        if self._pending is not None:
            self.memory.update(*(self.gathered(t) for t in self._pending))
            self._pending = None


DISTILLER = CRD
