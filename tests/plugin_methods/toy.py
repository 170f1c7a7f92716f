"""A method registered at run time by tests/test_methods_surface.py (never in rrdtui.registry.REGISTRY):
the student's penultimate features pulled towards zero, scaled by an option."""

from __future__ import annotations

from rrdtui.train.methods.base import Context, Forward, Method

SPEC = {
    "name": "toy",
    "title": "A Toy Method Registered at Run Time",
    "paper": "Nobody and Somebody, Workshop on Tests 2025",
    "formula": "L_toy = scale * mean(f_s^2)",
    "weights": {"gamma": 1.0, "alpha": 0.0, "beta": 0.25},
    "features": ["feat"],
    "losses": ["toy"],
    "options": {"scale": 2.0},
}


class Toy(Method):
    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.scale = float(ctx.options["scale"])

    def terms(self, out: Forward):
        terms = super().terms(out)
        terms["toy"] = self.scale * out.student_feat.float().pow(2).mean()
        return terms


DISTILLER = Toy
