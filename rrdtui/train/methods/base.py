"""What every distillation method shares: the batch it sees, what it is built from, and the base class.

The loop hands every method a `Forward` (logits, penultimate features, the stage maps when its SPEC
asks for them, labels, sample indices, step and epoch), sums `weight * term` over what comes back,
and never knows which method runs. Terms are reported unweighted as train/loss_<term>; train/loss is
the weighted total the optimiser sees.

Memories are updated in `after_step`, after the backward pass: autograd keeps a reference to a
memory it multiplied by, so changing it in place before backward would corrupt the gradient.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from rrdtui.config import MethodConfig
from rrdtui.losses import kd_loss
from rrdtui.registry import MethodInfo, method_info
from rrdtui.train.distributed import SINGLE, Group


class MethodError(Exception):
    """A method that cannot work with this data, teacher or student: one line naming the fix."""


@dataclass
class Forward:
    """One batch's outputs, as every method sees them."""

    student_feat: torch.Tensor
    student_logits: torch.Tensor
    teacher_feat: torch.Tensor | None
    teacher_logits: torch.Tensor | None
    labels: torch.Tensor
    index: torch.Tensor
    step: int = 0  # optimisation steps taken before this batch
    epoch: int = 0  # the current epoch, from 0
    student_maps: list[torch.Tensor] | None = None  # each stage's output (SPEC features "maps"/"preact")
    teacher_maps: list[torch.Tensor] | None = None


@dataclass
class Context:
    """Everything a method is built from: its configuration, the two networks and the data's shape."""

    cfg: MethodConfig
    info: MethodInfo
    student: nn.Module
    teacher: nn.Module | None
    train_labels: torch.Tensor
    num_classes: int
    in_channels: int
    image_size: int
    epochs: int
    steps_per_epoch: int
    batch_size: int
    generator: torch.Generator  # CPU, for the initial values of memories and heads
    group: Group = SINGLE  # the processes training the run (each sees its share of the batch)

    @property
    def options(self) -> dict[str, Any]:
        return self.cfg.options

    def map_shapes(self, model: nn.Module) -> list[tuple[int, int, int]]:
        from rrdtui.train.models import map_shapes

        return map_shapes(model, self.in_channels, self.image_size)


@dataclass
class FirstStage:
    """A part of the method trained before the run proper (AB's connectors, FT's paraphraser, FSP).

    The loop trains `parameters` for `epochs` epochs with SGD at `lr` on the sum of `loss(out)`,
    student and teacher in eval mode unless `student_train`, and reports each term as
    first/loss_<term>. The method's own weights are then used in the main stage as usual.
    """

    epochs: int
    parameters: list[nn.Parameter]
    loss: Callable[[Forward], dict[str, torch.Tensor]]
    lr: float
    student_train: bool = False
    momentum: float = 0.9
    weight_decay: float = 5e-4


class Embed(nn.Module):
    """Linear projection to the embedding size, then L2 normalisation."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.flatten(1)).float(), dim=1)


class Method(nn.Module):
    """Cross-entropy, plus KD when alpha > 0; a distillation method adds its own terms (weight beta).

    Subclasses build their parts in __init__(ctx), return {term: value} from `terms` (calling
    super().terms for CE and KD) and may override `after_step`, `probe_stats` and `first_stage`.
    """

    def __init__(self, ctx: Context):
        super().__init__()
        self.cfg = ctx.cfg
        self.info = ctx.info
        self.group = ctx.group
        self.weights = {"ce": ctx.cfg.gamma}
        if ctx.cfg.alpha > 0:
            self.weights["kd"] = ctx.cfg.alpha
        for term in ctx.info.losses:
            self.weights[term] = ctx.cfg.beta

    @property
    def wants_maps(self) -> bool:
        return bool({"maps", "preact"} & set(self.info.features))

    @property
    def preact(self) -> bool:
        return "preact" in self.info.features

    def terms(self, out: Forward) -> dict[str, torch.Tensor]:
        terms = {"ce": F.cross_entropy(out.student_logits.float(), out.labels)}
        if "kd" in self.weights:
            terms["kd"] = kd_loss(out.student_logits, out.teacher_logits, self.cfg.kd_T)
        return terms

    def after_step(self) -> None:
        """Update memories with the step's embeddings (after backward)."""

    def gathered(self, tensor: torch.Tensor) -> torch.Tensor:
        """What a memory takes from this step: with several processes, the rows of every rank in rank
        order, the whole global batch (method.gather, as MoCo's concat_all_gather); this rank's own
        rows with method.gather false (a memory per process). One process: the batch itself."""
        return self.group.gather(tensor) if self.cfg.gather else tensor

    def probe_stats(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Method-specific statistics on the fixed probe set."""
        return {}

    def first_stage(self, student: nn.Module) -> FirstStage | None:
        """A first stage to train before the run proper, or None (most methods)."""
        return None


def distiller_class(name: str) -> type[Method]:
    """The class that implements method `name` (its `+kd` combination shares the class)."""
    info = method_info(name)
    module = importlib.import_module(info.module)
    cls = getattr(module, "DISTILLER", None)
    if cls is None:
        raise MethodError(f"method module {info.module} has no DISTILLER class")
    return cls


def build_method(ctx: Context) -> Method:
    """The method module for ctx.cfg.name (weights and options already resolved by config.validate)."""
    return distiller_class(ctx.cfg.name)(ctx)
