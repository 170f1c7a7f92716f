"""Relational knowledge distillation: the student's penultimate features should keep the teacher's
geometry of the batch, both the pairwise distances (each side scaled by its mean distance) and the
angles formed by every triple of samples, compared with a smooth L1 loss. The features' sizes may
differ, so any teacher-student pair works.
"""

from __future__ import annotations

import torch

from rrdtui.losses import rkd_loss
from rrdtui.train.methods.base import Forward, Method

SPEC = {
    "name": "rkd",
    "title": "Relational Knowledge Distillation",
    "paper": "Park, Kim, Lu and Cho, CVPR 2019 (arXiv 1904.05068)",
    "formula": "L_rkd = w_dist * smoothL1(d_s/mean d_s, d_t/mean d_t) + w_angle * smoothL1(cos angles_s, cos angles_t), on the features",
    "weights": {"gamma": 1.0, "alpha": 0.0, "beta": 1.0},
    "features": ["feat"],
    "losses": ["rkd"],
    "options": {"w_dist": 25.0, "w_angle": 50.0},
    "paper_key": "RKD",
}


class RKD(Method):
    def terms(self, out: Forward) -> dict[str, torch.Tensor]:
        terms = super().terms(out)
        options = self.cfg.options
        terms["rkd"] = rkd_loss(out.student_feat, out.teacher_feat, options["w_dist"], options["w_angle"])
        return terms


DISTILLER = RKD
