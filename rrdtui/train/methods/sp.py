"""Similarity-preserving distillation: inputs that the teacher finds alike (in its last stage's
output) should look alike to the student. Each side's batch Gram matrix of flattened last-stage
maps, each row scaled to unit length, is matched; the two maps may differ in every dimension but
the batch, so any teacher-student pair works.
"""

from __future__ import annotations

import torch

from rrdtui.losses import sp_loss
from rrdtui.train.methods.base import Forward, Method

SPEC = {
    "name": "sp",
    "title": "Similarity-Preserving Knowledge Distillation",
    "paper": "Tung and Mori, ICCV 2019 (arXiv 1907.09682)",
    "formula": "L_sp = ||rownorm(S S^T) - rownorm(T T^T)||_F^2 / B^2, S/T the batch's flattened last-stage maps",
    "weights": {"gamma": 1.0, "alpha": 0.0, "beta": 3000.0},
    "features": ["maps"],
    "losses": ["sp"],
    "paper_key": "SP",
}


class SP(Method):
    def terms(self, out: Forward) -> dict[str, torch.Tensor]:
        terms = super().terms(out)
        terms["sp"] = sp_loss(out.student_maps[-1], out.teacher_maps[-1])
        return terms


DISTILLER = SP
