"""Probabilistic knowledge transfer: the student's pooled features should give each sample the same
neighbourhood distribution as the teacher's (cosine kernel), as RepDistiller trains it on feat[-1]."""

from __future__ import annotations

import torch

from rrdtui.losses import pkt_loss
from rrdtui.train.methods.base import Forward, Method

SPEC = {
    "name": "pkt",
    "title": "Learning Deep Representations with Probabilistic Knowledge Transfer",
    "paper": "Passalis and Tefas, ECCV 2018 (arXiv 1803.10837)",
    "formula": "L_pkt = mean_ij p_t(j|i) log(p_t(j|i) / p_s(j|i)), p(j|i) the row-normalised (cos(f_i, f_j) + 1) / 2 of the pooled features",
    "weights": {"gamma": 1.0, "alpha": 0.0, "beta": 30000.0},
    "features": ["feat"],
    "losses": ["pkt"],
    "paper_key": "PKT",
}


class PKT(Method):
    def terms(self, out: Forward) -> dict[str, torch.Tensor]:
        terms = super().terms(out)
        terms["pkt"] = pkt_loss(out.student_feat, out.teacher_feat)
        return terms


DISTILLER = PKT
