"""Flow of solution procedure, as RepDistiller trains it: a first stage in which the student's feature
layers learn the teacher's FSP matrices, then plain training.

The FSP matrix of two consecutive maps is the spatial mean of their channel-by-channel products (the
larger map pooled to the smaller's size); every consecutive pair of maps (stem output, then each
stage: RepDistiller's feat[:-1]) gives one. The student's and the teacher's maps must have the same
channel counts, map by map, so that the matrices compare; other pairings are refused when the method
is built.

First stage (RepDistiller's helper/pretrain.py `init` for 'fsp'): every student parameter except the
final classifier (get_feat_modules) is trained with SGD on the sum over pairs of fsp_loss, reported as
first/loss_fsp. As there, those layers are in train mode (`init` puts the student in eval mode, then
calls train() on the modules it trains).

Main stage: RepDistiller's train_distill sets FSP's loss to 0 ("can also add loss to this stage"), so
the student is trained on gamma*CE (+ alpha*KD for fsp+kd) only and beta multiplies nothing. This
module therefore adds no main-stage term.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from rrdtui.losses import fsp_loss
from rrdtui.train.methods.ab import feature_parameters, first_stage_epochs, first_stage_lr, shapes_text
from rrdtui.train.methods.base import Context, FirstStage, Forward, Method, MethodError

SPEC = {
    "name": "fsp",
    "title": "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and Transfer Learning",
    "paper": "Yim, Joo, Bae and Kim, CVPR 2017",
    "formula": "first stage: sum_l mean (G_s^l - G_t^l)^2, G^l = spatial mean of map_{l+1} map_l^T over consecutive maps; then L = CE",
    "weights": {"gamma": 1.0, "alpha": 0.0, "beta": 50.0},
    "features": ["maps"],
    "losses": [],
    "options": {"init_epochs": None, "init_lr": 0.05},
    "paper_key": "FSP",
    "first_stage": "the student's feature layers on the FSP-matrix loss",
}


class FSP(Method):
    def __init__(self, ctx: Context):
        super().__init__(ctx)
        s, t = ctx.map_shapes(ctx.student), ctx.map_shapes(ctx.teacher)
        if len(s) != len(t) or any(a[0] != b[0] for a, b in zip(s, t)):
            raise MethodError(
                f"FSP needs the same channel count in each student and teacher map, but the student's maps "
                f"are {shapes_text(s)} and the teacher's {shapes_text(t)} (C x H x W): choose a teacher of "
                "the student's widths (e.g. resnet56 -> resnet20)"
            )
        self.epochs = first_stage_epochs(ctx)
        self.lr = first_stage_lr(ctx)
        self._maps = False

    @property
    def wants_maps(self) -> bool:
        # Maps are needed in the first stage only; the main stage is a plain CE (+ KD) step.
        return self._maps

    def first_stage_loss(self, out: Forward) -> dict[str, torch.Tensor]:
        s, t = out.student_maps, out.teacher_maps
        total = sum(fsp_loss(s[i], s[i + 1], t[i], t[i + 1]) for i in range(len(s) - 1))
        return {"fsp": total}

    def first_stage(self, student: nn.Module) -> FirstStage:
        self._maps = True
        return FirstStage(
            epochs=self.epochs,
            parameters=feature_parameters(student),
            loss=self.first_stage_loss,
            lr=self.lr,
            student_train=True,
        )

    def terms(self, out: Forward) -> dict[str, torch.Tensor]:
        self._maps = False  # the first stage is over once the main stage asks for terms
        return super().terms(out)


DISTILLER = FSP
