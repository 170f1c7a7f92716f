"""Activation boundaries, as RepDistiller trains them: a first stage that teaches the student's
feature layers where the teacher's neurons switch on, then plain training.

First stage (RepDistiller's helper/pretrain.py `init` for 'abound'): a connector per stage output
after the stem (maps[1:], pre-activation on both sides, as feat[1:-1] with preact=True) maps the
student's map to the teacher's shape; the connectors and every student parameter except the final
classifier (RepDistiller's get_feat_modules) are trained with SGD on
sum_l ab_loss(connector_l(s_l), t_l) * ab_layer_scale(l, n, B), reported as first/loss_ab. The
student's feature layers are in train mode there: `init` puts the student in eval mode but then calls
train() on the trained modules, which include those layers, so their BatchNorm statistics update.

Main stage: RepDistiller's train_distill sets AB's loss to 0 ("can also add loss to this stage"), so
the student is trained on gamma*CE (+ alpha*KD for ab+kd) only; the connectors are not used again and
beta multiplies nothing. This module therefore adds no main-stage term.

A connector is the identity where the two maps have the same channels and height, otherwise
RepDistiller's ConvReg without its ReLU: a convolution to the teacher's channels (1x1 at equal size,
3x3 stride 2 when the student's map is twice as large, a 4x4 stride-2 transposed convolution when it
is half as large) followed by BatchNorm.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from rrdtui.losses import ab_layer_scale, ab_loss
from rrdtui.train.methods.base import Context, FirstStage, Forward, Method, MethodError

SPEC = {
    "name": "ab",
    "title": "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden Neurons",
    "paper": "Heo, Lee, Yun and Choi, AAAI 2019 (arXiv 1811.03233)",
    "formula": "first stage: sum_l 2^(l-n+1)*3/(1000B) * sum[(r-m)^2 (t>0, r<=m) + (r+m)^2 (t<=0, r>-m)], r = connector_l(s_l), s, t pre-activation maps; then L = CE",
    "weights": {"gamma": 1.0, "alpha": 0.0, "beta": 1.0},
    "features": ["preact"],
    "losses": [],
    "options": {"init_epochs": None, "init_lr": 0.05, "margin": 1.0},
    "paper_key": "AB",
    "first_stage": "connectors and the student's feature layers on the activation-boundary loss",
}


def first_stage_epochs(ctx: Context) -> int:
    """method.options.init_epochs, or by default one eighth of train.epochs (RepDistiller: 30 of 240), at least 1."""
    given = ctx.options.get("init_epochs")
    if given is None:
        return max(1, ctx.epochs // 8)
    if isinstance(given, bool) or not isinstance(given, int) or given < 1:
        raise MethodError(f"method.options.init_epochs must be a whole number of epochs >= 1, got {given!r}")
    return given


def first_stage_lr(ctx: Context) -> float:
    lr = ctx.options["init_lr"]
    if lr <= 0:
        raise MethodError(f"method.options.init_lr must be > 0, got {lr}")
    return float(lr)


def feature_parameters(student: nn.Module) -> list[nn.Parameter]:
    """Every trainable student parameter except the final classifier's (RepDistiller's get_feat_modules)."""
    from rrdtui.train.loop import classifier_module

    head = {id(p) for p in classifier_module(student).parameters()}
    return [p for p in student.parameters() if id(p) not in head and p.requires_grad]


def shapes_text(shapes: list[tuple[int, int, int]]) -> str:
    return ", ".join("x".join(str(d) for d in shape) for shape in shapes)


def connector(s: tuple[int, int, int], t: tuple[int, int, int]) -> nn.Module:
    """RepDistiller's AB connector from a student map of shape s to a teacher map of shape t (C, H, W)."""
    (s_c, s_h, s_w), (t_c, t_h, t_w) = s, t
    if s_c == t_c and s_h == t_h:
        return nn.Identity()
    if s_h == 2 * t_h:
        conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
    elif 2 * s_h == t_h:
        conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
    elif s_h >= t_h and s_w >= t_w:
        conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
    else:
        raise MethodError(
            f"AB cannot connect a student map of {shapes_text([s])} to a teacher map of {shapes_text([t])} "
            "(C x H x W): the student's map must be at least as large, or half the size"
        )
    return nn.Sequential(conv, nn.BatchNorm2d(t_c))


class AB(Method):
    def __init__(self, ctx: Context):
        super().__init__(ctx)
        s, t = ctx.map_shapes(ctx.student)[1:], ctx.map_shapes(ctx.teacher)[1:]
        if len(s) != len(t):
            raise MethodError(
                f"AB pairs the stage outputs one to one, but the student's are {shapes_text(s)} and the "
                f"teacher's {shapes_text(t)} (C x H x W): choose networks with the same number of stages"
            )
        self.connectors = nn.ModuleList(connector(a, b) for a, b in zip(s, t))
        # Trained in the first stage only (RepDistiller leaves them out of the main optimiser).
        self.connectors.requires_grad_(False)
        self.margin = float(ctx.options["margin"])
        self.epochs = first_stage_epochs(ctx)
        self.lr = first_stage_lr(ctx)
        self._maps = False

    @property
    def wants_maps(self) -> bool:
        # Maps are needed in the first stage only; the main stage is a plain CE (+ KD) step.
        return self._maps

    def first_stage_loss(self, out: Forward) -> dict[str, torch.Tensor]:
        s_maps, t_maps = out.student_maps[1:], out.teacher_maps[1:]
        n, batch = len(s_maps), s_maps[0].shape[0]
        total = sum(
            ab_loss(conn(s), t, self.margin) * ab_layer_scale(i, n, batch)
            for i, (conn, s, t) in enumerate(zip(self.connectors, s_maps, t_maps))
        )
        return {"ab": total}

    def first_stage(self, student: nn.Module) -> FirstStage:
        self.connectors.requires_grad_(True)
        self._maps = True
        return FirstStage(
            epochs=self.epochs,
            parameters=list(self.connectors.parameters()) + feature_parameters(student),
            loss=self.first_stage_loss,
            lr=self.lr,
            student_train=True,
        )

    def terms(self, out: Forward) -> dict[str, torch.Tensor]:
        self._maps = False  # the first stage is over once the main stage asks for terms
        return super().terms(out)


DISTILLER = AB
