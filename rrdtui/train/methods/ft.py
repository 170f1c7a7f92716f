"""Factor transfer, as RepDistiller trains it: a paraphraser learns to compress the teacher's
last-stage map into a "factor", then a translator on the student's last-stage map learns to produce
the same factor while the student trains.

First stage (RepDistiller's helper/pretrain.py `init` for 'factor'): the paraphraser alone (an
encoder of three 3x3 convolutions to half the teacher's channels, a mirrored decoder of transposed
convolutions, LeakyReLU 0.1, no BatchNorm) is trained to reconstruct the teacher's last-stage map
(maps[-1], RepDistiller's feat[-2]) with mean squared error, reported as first/loss_ft_rec. The
student is in eval mode and untouched. RepDistiller's rate for this stage is 0.01 when the student is
a ResNet or WRN (its recipe for every pair it reports with such a student) and its main learning
rate otherwise; init_lr defaults to 0.01.

Main stage (RepDistiller's train_distill for 'factor'): the translator (three 3x3 convolutions with
BatchNorm and LeakyReLU from the student's channels to the paraphraser's factor channels) is trained
with the student on ft_loss(translator(student maps[-1]), paraphraser encoder(teacher maps[-1])),
reported as train/loss_ft. The paraphraser is frozen there (RepDistiller puts it in eval mode and
leaves it out of the optimiser): its factor is computed without gradient.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rrdtui.losses import ft_loss
from rrdtui.train.methods.ab import first_stage_epochs, first_stage_lr
from rrdtui.train.methods.base import Context, FirstStage, Forward, Method, MethodError

SPEC = {
    "name": "ft",
    "title": "Paraphrasing Complex Network: Network Compression via Factor Transfer",
    "paper": "Kim, Park and Kwak, NeurIPS 2018 (arXiv 1802.04977)",
    "formula": "L_ft = mean |phi(T(s)) - phi(P(t))|, phi(f) = L2-normalised channel mean of f^2, T the translator, P the paraphraser's encoder (pre-trained on reconstructing t)",
    "weights": {"gamma": 1.0, "alpha": 0.0, "beta": 200.0},
    "features": ["maps"],
    "losses": ["ft"],
    "options": {"init_epochs": None, "init_lr": 0.01, "rate": 0.5},
    "paper_key": "FT",
    "first_stage": "the paraphraser on reconstructing the teacher's last-stage map",
}


def _conv_stack(channels: list[int], transposed: bool, batch_norm: bool) -> nn.Sequential:
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels, channels[1:]):
        layers.append(conv(c_in, c_out, 3, 1, 1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """Teacher map (C channels) -> factor (k*C channels) -> reconstruction (C channels)."""

    def __init__(self, channels: int, factor_channels: int):
        super().__init__()
        c, k = channels, factor_channels
        self.encoder = _conv_stack([c, c, k, k], transposed=False, batch_norm=False)
        self.decoder = _conv_stack([k, k, c, c], transposed=True, batch_norm=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        factor = self.encoder(x)
        return factor, self.decoder(factor)


class FT(Method):
    def __init__(self, ctx: Context):
        super().__init__(ctx)
        s_channels = ctx.map_shapes(ctx.student)[-1][0]
        t_channels = ctx.map_shapes(ctx.teacher)[-1][0]
        rate = float(ctx.options["rate"])
        if not 0 < rate <= 1:
            raise MethodError(f"method.options.rate must be in (0, 1], got {rate}")
        factor = max(1, int(t_channels * rate))
        self.paraphraser = Paraphraser(t_channels, factor)
        self.translator = _conv_stack([s_channels, s_channels, factor, factor], transposed=False, batch_norm=True)
        # Trained in the first stage only: out of the main optimiser, frozen in the main stage.
        self.paraphraser.requires_grad_(False)
        self.epochs = first_stage_epochs(ctx)
        self.lr = first_stage_lr(ctx)

    def first_stage_loss(self, out: Forward) -> dict[str, torch.Tensor]:
        target = out.teacher_maps[-1].detach()
        _, rec = self.paraphraser(target)
        return {"ft_rec": F.mse_loss(rec.float(), target.float())}

    def first_stage(self, student: nn.Module) -> FirstStage:
        self.paraphraser.requires_grad_(True)
        return FirstStage(
            epochs=self.epochs,
            parameters=list(self.paraphraser.parameters()),
            loss=self.first_stage_loss,
            lr=self.lr,
            student_train=False,
        )

    def terms(self, out: Forward) -> dict[str, torch.Tensor]:
        terms = super().terms(out)
        with torch.no_grad():
            factor_t = self.paraphraser.encoder(out.teacher_maps[-1])
        terms["ft"] = ft_loss(self.translator(out.student_maps[-1]), factor_t)
        return terms


DISTILLER = FT
