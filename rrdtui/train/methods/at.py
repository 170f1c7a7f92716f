"""Attention transfer: for each pair of stage outputs, the student's spatial attention map (the
channel mean of the squared activations, as a unit vector over positions) is pulled towards the
teacher's. The pairs are RepDistiller's: every stage output after the stem, student and teacher
zipped in order, so when one network has more stages (vgg's five maps against resnet's four) its
last ones go unused. Channel counts may differ; a larger map is pooled to the smaller's size.
"""

from __future__ import annotations

import torch

from rrdtui.losses import at_loss
from rrdtui.train.methods.base import Context, Forward, Method, MethodError

SPEC = {
    "name": "at",
    "title": "Paying More Attention to Attention: Improving the Performance of Convolutional Neural Networks via Attention Transfer",
    "paper": "Zagoruyko and Komodakis, ICLR 2017 (arXiv 1612.03928)",
    "formula": "L_at = sum_l mean_j (a_s^l - a_t^l)_j^2, a^l = unit-norm channel mean of (stage-l map)^2, stages zipped after the stem",
    "weights": {"gamma": 1.0, "alpha": 0.0, "beta": 1000.0},
    "features": ["maps"],
    "losses": ["at"],
    "paper_key": "AT",
}


class AT(Method):
    def __init__(self, ctx: Context):
        super().__init__(ctx)
        n_s, n_t = len(ctx.map_shapes(ctx.student)), len(ctx.map_shapes(ctx.teacher))
        self.pairs = min(n_s, n_t) - 1
        if self.pairs < 1:
            raise MethodError(
                f"AT pairs the stage maps after the stem, but the student has {n_s} maps and the teacher {n_t}"
            )

    def terms(self, out: Forward) -> dict[str, torch.Tensor]:
        terms = super().terms(out)
        pairs = zip(out.student_maps[1:], out.teacher_maps[1:])
        terms["at"] = sum(at_loss(f_s, f_t, p=2.0) for f_s, f_t in pairs)
        return terms


DISTILLER = AT
