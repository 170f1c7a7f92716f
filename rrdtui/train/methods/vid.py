"""Variational information distillation: for each pair of stage outputs, a trained regressor (three
1x1 convolutions) predicts the teacher's map from the student's as the mean of a Gaussian with a
learned per-channel variance, and the loss is the teacher map's negative log-likelihood under it.
The pairs are RepDistiller's: the stage outputs after the stem, zipped in order (a network's extra
stages go unused). When the sizes differ, the larger of the student input and the teacher map is
pooled to the other's size first.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from rrdtui.losses import vid_loss
from rrdtui.train.methods.base import Context, Forward, Method, MethodError

SPEC = {
    "name": "vid",
    "title": "Variational Information Distillation for Knowledge Transfer",
    "paper": "Ahn, Hu, Damianou, Lawrence and Dai, CVPR 2019 (arXiv 1904.05835)",
    "formula": "L_vid = sum_l mean 0.5*((mu_l(s_l) - t_l)^2 / var_l + log var_l), mu_l three 1x1 convs, var_l = softplus(w_l) + eps",
    "weights": {"gamma": 1.0, "alpha": 0.0, "beta": 1.0},
    "features": ["maps"],
    "losses": ["vid"],
    "paper_key": "VID",
}

INIT_VAR = 5.0  # RepDistiller's init_pred_var
EPS = 1e-5  # and its eps


class VIDRegressor(nn.Module):
    """RepDistiller's VIDLoss parameters: student channels -> teacher channels (middle width the
    teacher's), and a per-channel log scale whose softplus starts at INIT_VAR - EPS."""

    def __init__(self, s_channels: int, t_channels: int):
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(s_channels, t_channels, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(t_channels, t_channels, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(t_channels, t_channels, kernel_size=1, bias=False),
        )
        self.log_scale = nn.Parameter(torch.full((t_channels,), math.log(math.exp(INIT_VAR - EPS) - 1.0)))

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        if f_s.shape[2] > f_t.shape[2]:
            f_s = F.adaptive_avg_pool2d(f_s, tuple(f_t.shape[2:]))
        return vid_loss(self.regressor(f_s), self.log_scale, f_t, eps=EPS)


class VID(Method):
    def __init__(self, ctx: Context):
        super().__init__(ctx)
        s_shapes, t_shapes = ctx.map_shapes(ctx.student)[1:], ctx.map_shapes(ctx.teacher)[1:]
        if not s_shapes or not t_shapes:
            raise MethodError(
                f"VID pairs the stage maps after the stem, but the student has {len(s_shapes) + 1} maps "
                f"and the teacher {len(t_shapes) + 1}"
            )
        self.regressors = nn.ModuleList(VIDRegressor(s[0], t[0]) for s, t in zip(s_shapes, t_shapes))

    def terms(self, out: Forward) -> dict[str, torch.Tensor]:
        terms = super().terms(out)
        pairs = zip(out.student_maps[1:], out.teacher_maps[1:], self.regressors)
        terms["vid"] = sum(reg(f_s, f_t) for f_s, f_t, reg in pairs)
        return terms


DISTILLER = VID
