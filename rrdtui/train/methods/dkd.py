"""Decoupled knowledge distillation, as mdistiller trains it on CIFAR-100: KD split into a target-class
part (TCKD) and a non-target part (NCKD) with their own weights, ramped in linearly over the first
`warmup` epochs.

mdistiller counts epochs from 1 and scales the loss by min(epoch / warmup, 1), so its first epoch
already has 1/warmup of the loss. Our epochs count from 0, so the factor here is
min((epoch + 1) / warmup, 1): the same value in the same epoch. The reported train/loss_dkd includes
that factor, as mdistiller's loss_kd does; beta multiplies it (1 by default, as mdistiller has no
such weight: its own alpha and beta are the options dkd_alpha and dkd_beta).
"""

from __future__ import annotations

import torch

from rrdtui.losses import dkd_loss
from rrdtui.train.methods.base import Context, Forward, Method, MethodError

SPEC = {
    "name": "dkd",
    "title": "Decoupled Knowledge Distillation",
    "paper": "Zhao, Cui, Song, Qiu and Liang, CVPR 2022 (arXiv 2203.08679)",
    "formula": "L_dkd = min(epoch / warmup, 1) * (dkd_alpha * TCKD + dkd_beta * NCKD), KL of the target/non-target split and of the non-target classes at temperature T",
    "weights": {"gamma": 1.0, "alpha": 0.0, "beta": 1.0},
    "losses": ["dkd"],
    "options": {"dkd_alpha": 1.0, "dkd_beta": 8.0, "T": 4.0, "warmup": 20},
}


class DKD(Method):
    def __init__(self, ctx: Context):
        super().__init__(ctx)
        opts = ctx.options
        if opts["warmup"] < 1:
            raise MethodError(f"method.options.warmup must be at least 1 epoch, got {opts['warmup']}")
        if opts["T"] <= 0:
            raise MethodError(f"method.options.T must be > 0, got {opts['T']}")
        self.dkd_alpha, self.dkd_beta = float(opts["dkd_alpha"]), float(opts["dkd_beta"])
        self.T, self.warmup = float(opts["T"]), int(opts["warmup"])

    def warmup_factor(self, epoch: int) -> float:
        """mdistiller's min(epoch / warmup, 1) with its 1-based epoch: our 0-based epoch plus one."""
        return min((epoch + 1) / self.warmup, 1.0)

    def terms(self, out: Forward) -> dict[str, torch.Tensor]:
        terms = super().terms(out)
        loss = dkd_loss(out.student_logits, out.teacher_logits, out.labels, self.dkd_alpha, self.dkd_beta, self.T)
        terms["dkd"] = self.warmup_factor(out.epoch) * loss
        return terms


DISTILLER = DKD
