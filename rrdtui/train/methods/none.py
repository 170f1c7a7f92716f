"""Plain cross-entropy: a teacher, or the vanilla student of the paper's tables."""

from __future__ import annotations

from rrdtui.train.methods.base import Method

SPEC = {
    "name": "none",
    "title": "Cross-entropy only (no distillation)",
    "paper": "the vanilla student of the paper's tables",
    "formula": "L = CE(y, z_s)",
    "weights": {"gamma": 1.0, "alpha": 0.0, "beta": 0.0},
    "teacher": False,
    "paper_key": "student",
}

DISTILLER = Method
