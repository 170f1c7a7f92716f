"""Shared base class and helpers for the CIFAR model zoo.

Every CIFAR architecture subclasses :class:`CifarNet` and implements
``features(x)``: the globally average-pooled, flattened activation that feeds the
final ``nn.Linear``. ``forward`` and ``forward_with_features`` are derived from
it, so both always run exactly one pass through the backbone.

For distillers that match intermediate activations (FitNets, AT, OFD, ...) each
architecture also implements ``_maps_and_feat(x, preact)``, from which
:meth:`CifarNet.forward_with_maps` returns ``(maps, feat, logits)`` -- again one
pass. ``maps`` are RepDistiller's ``model(x, is_feat=True, preact=preact)``
feature list without its last (pooled) entry; each family's module documents
its choice of tensors. It is a separate code path on purpose: ``features`` (the
training loop's hot path) stays free of bookkeeping.

The classifier's attribute name differs between families (``fc``, ``linear``,
``classifier``) because it must match the published checkpoints' state-dict
keys; subclasses name it in ``classifier_name``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CifarNet(nn.Module):
    """Backbone + single classifier head, with feature access for distillation."""

    #: attribute name of the classifier module (state-dict prefix of its keys)
    classifier_name: str = "fc"
    #: size of the pooled feature vector, set by subclasses in ``__init__``
    feat_dim: int

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the (B, feat_dim) classifier input for a batch of images."""
        raise NotImplementedError

    def classify(self, feat: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.classifier_name)(feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.features(x)
        return feat, self.classify(feat)

    def _maps_and_feat(self, x: torch.Tensor, preact: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Return (intermediate maps, pooled feature) from one backbone pass."""
        raise NotImplementedError

    def forward_with_maps(
        self, x: torch.Tensor, preact: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """One pass returning ``(maps, feat, logits)``.

        ``maps`` is ``[stem output, stage-1 output, ..., last-stage output]`` as
        RepDistiller's ``is_feat=True`` list (minus its pooled last entry);
        ``preact=True`` swaps in the pre-activation tensors where the reference
        defines them. ``feat``/``logits`` equal ``forward_with_features(x)``.
        """
        maps, feat = self._maps_and_feat(x, preact)
        return maps, feat, self.classify(feat)


def run_stage_with_preact(stage: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a stage of blocks; return (output, pre-activation output of its last block).

    The last block must accept ``return_preact=True`` and then return
    ``(out, preact)`` -- the tensor it feeds to its final ReLU, as the
    reference's ``is_last`` blocks do.
    """
    last = len(stage) - 1
    for i in range(last):
        x = stage[i](x)
    return stage[last](x, return_preact=True)


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pool + flatten: (B, C, H, W) -> (B, C).

    The reference implementations use fixed-size pools (e.g. ``AvgPool2d(8)`` on
    an 8x8 map) which equal a global pool for 32x32 inputs; the global form also
    works for other input sizes (e.g. 28x28 Fashion-MNIST).
    """
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def init_weights(model: nn.Module) -> None:
    """Standard init: He-normal (fan_out) convs, BN scale 1 / shift 0, zero Linear bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, groups=groups, bias=False)
