"""Correlation congruence, as RepDistiller runs it: both penultimate features go through a trained
linear embedding (to method.feat_dim, 128 by default; no normalisation), and the loss multiplies
the absolute student-teacher differences of consecutive samples in the batch, so the student is
pushed to reproduce how the teacher's embeddings vary from one sample to the next. Both
embeddings are trained, the teacher's included.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from rrdtui.losses import cc_loss
from rrdtui.train.methods.base import Context, Forward, Method

SPEC = {
    "name": "cc",
    "title": "Correlation Congruence for Knowledge Distillation",
    "paper": "Peng, Jin, Liu, Li, Wu, Liu, Zhou and Zhang, ICCV 2019 (arXiv 1904.01802)",
    "formula": "L_cc = mean_i sum_d |e_s - e_t|_{i,d} |e_s - e_t|_{i+1,d}, e = trained linear embeddings (128-d) of the features",
    "weights": {"gamma": 1.0, "alpha": 0.0, "beta": 0.02},
    "features": ["feat"],
    "losses": ["cc"],
    "paper_key": "CC",
}


class LinearEmbed(nn.Module):
    """RepDistiller's LinearEmbed: flatten, then one linear layer."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class CC(Method):
    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.student_embed = LinearEmbed(ctx.student.feat_dim, ctx.cfg.feat_dim)
        self.teacher_embed = LinearEmbed(ctx.teacher.feat_dim, ctx.cfg.feat_dim)

    def terms(self, out: Forward) -> dict[str, torch.Tensor]:
        terms = super().terms(out)
        terms["cc"] = cc_loss(self.student_embed(out.student_feat), self.teacher_embed(out.teacher_feat))
        return terms


DISTILLER = CC
