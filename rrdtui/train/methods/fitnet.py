"""FitNets' hints, trained the way RepDistiller trains them on CIFAR: in one stage, together with
the student. The student's stage map `hint_layer` (2 by default: the second stage's output) goes
through a small trained regressor (a convolution that reshapes it to the teacher's map, then BN and
ReLU) and is pulled towards the teacher's map of the same index by mean squared error.

The FitNets paper pre-trains the student's lower half on the hint first; RepDistiller does not
(`hint` has no init stage in its train_student.py), and neither does this module.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from rrdtui.losses import hint_loss
from rrdtui.train.methods.base import Context, Forward, Method, MethodError

SPEC = {
    "name": "fitnet",
    "title": "FitNets: Hints for Thin Deep Nets",
    "paper": "Romero, Ballas, Kahou, Chassang, Gatta and Bengio, ICLR 2015 (arXiv 1412.6550)",
    "formula": "L_hint = mean (r(s_l) - t_l)^2, s_l/t_l the stage-l maps (l = 2), r a trained conv + BN + ReLU regressor",
    "weights": {"gamma": 1.0, "alpha": 0.0, "beta": 100.0},
    "features": ["maps"],
    "losses": ["hint"],
    "options": {"hint_layer": 2},
    "paper_key": "FitNet",
}


def _shape(shape: tuple[int, int, int]) -> str:
    return "x".join(str(n) for n in shape)


class ConvReg(nn.Module):
    """RepDistiller's ConvReg: a student map (C_s, H_s, W_s) to the teacher's (C_t, H_t, W_t).

    Twice the teacher's height: a 3x3 convolution of stride 2; half of it: a 4x4 transposed
    convolution of stride 2; otherwise, at least as large: an unpadded convolution whose kernel
    takes away the difference. Then BN, and ReLU unless `use_relu` is false. Any other pair of sizes
    (or a width that does not come out right) is a MethodError.
    """

    def __init__(self, s_shape: tuple[int, int, int], t_shape: tuple[int, int, int], use_relu: bool = True):
        super().__init__()
        s_c, s_h, s_w = s_shape
        t_c, t_h, t_w = t_shape
        if s_h == 2 * t_h:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
            out = ((s_h - 1) // 2 + 1, (s_w - 1) // 2 + 1)
        elif s_h * 2 == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
            out = (2 * s_h, 2 * s_w)
        elif s_h >= t_h and s_w >= t_w:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
            out = (t_h, t_w)
        else:
            out = None
        if out != (t_h, t_w):
            raise MethodError(
                f"the regressor cannot turn a {_shape(s_shape)} student map into the teacher's {_shape(t_shape)} "
                "(it takes the teacher's height, twice it or half of it, or any larger size)"
            )
        self.bn = nn.BatchNorm2d(t_c)
        self.relu = nn.ReLU() if use_relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class FitNet(Method):
    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.layer = int(ctx.options["hint_layer"])
        s_shapes, t_shapes = ctx.map_shapes(ctx.student), ctx.map_shapes(ctx.teacher)
        n = min(len(s_shapes), len(t_shapes))
        if not 0 <= self.layer < n:
            raise MethodError(
                f"method.options.hint_layer is {self.layer} but the student has {len(s_shapes)} maps and the "
                f"teacher {len(t_shapes)}: choose a layer from 0 to {n - 1}"
            )
        try:
            self.regressor = ConvReg(s_shapes[self.layer], t_shapes[self.layer])
        except MethodError as exc:
            raise MethodError(f"FitNet hint layer {self.layer}: {exc}; choose another method.options.hint_layer "
                              "or teacher-student pair") from None

    def terms(self, out: Forward) -> dict[str, torch.Tensor]:
        terms = super().terms(out)
        f_s = self.regressor(out.student_maps[self.layer])
        terms["hint"] = hint_loss(f_s, out.teacher_maps[self.layer])
        return terms


DISTILLER = FitNet
