"""Hinton's knowledge distillation: the student matches the teacher's softened class probabilities."""

from __future__ import annotations

from rrdtui.train.methods.base import Context, Method

SPEC = {
    "name": "kd",
    "title": "Distilling the Knowledge in a Neural Network",
    "paper": "Hinton, Vinyals and Dean, NIPS workshop 2014 (arXiv 1503.02531)",
    "formula": "L = gamma*CE(y, z_s) + alpha*T^2*KL(softmax(z_t/T) || softmax(z_s/T))",
    "weights": {"gamma": 0.1, "alpha": 0.9, "beta": 0.0},
    "paper_key": "KD",
}


class KD(Method):
    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.weights["kd"] = ctx.cfg.alpha  # KD's own term, even with alpha set to 0 by the user


DISTILLER = KD
