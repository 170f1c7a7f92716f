"""Neuron selectivity transfer: the spatial response pattern of each student channel should match the
teacher's in distribution (squared MMD with a second-order polynomial kernel), summed over the stage
outputs after the stem: RepDistiller's feat[1:-1], here maps[1:]. Student and teacher maps are paired
in order; where one network has more stages, the extra ones are left out, as RepDistiller's zip does.
Channel counts may differ; a larger map is pooled to the smaller one's size."""

from __future__ import annotations

import torch

from rrdtui.losses import nst_loss
from rrdtui.train.methods.base import Forward, Method

SPEC = {
    "name": "nst",
    "title": "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer",
    "paper": "Huang and Wang, 2017 (arXiv 1707.01219)",
    "formula": "L_nst = sum_l MMD^2_k(s_l, t_l), k(x, y) = (x.y)^2 over the L2-normalised channel responses of each stage output l",
    "weights": {"gamma": 1.0, "alpha": 0.0, "beta": 50.0},
    "features": ["maps"],
    "losses": ["nst"],
    "paper_key": "NST",
}


class NST(Method):
    def terms(self, out: Forward) -> dict[str, torch.Tensor]:
        terms = super().terms(out)
        pairs = zip(out.student_maps[1:], out.teacher_maps[1:])
        terms["nst"] = sum(nst_loss(s, t) for s, t in pairs)
        return terms


DISTILLER = NST
