"""Wide ResNets for CIFAR (Zagoruyko & Komodakis 2016), ``wrn_<depth>_<k>``.

Pre-activation blocks (BN-ReLU-conv). ``depth = 6n + 4`` gives ``n`` blocks per
stage, stage widths are (16k, 32k, 64k) after a 16-channel stem, and a final
BN+ReLU precedes pooling, so the feature fed to ``fc`` is post-activation.

``forward_with_maps`` (RepDistiller's ``is_feat`` list): ``f0`` = raw output of
``conv1``; ``f1..f3`` = raw outputs of ``block1..block3`` (residual sums: no
BN/ReLU applied -- in particular ``f3`` is taken *before* the final
``bn1``+ReLU, as in the reference). With ``preact=True`` each of ``f1..f3`` is
replaced by the BN that next consumes it, before its ReLU: ``f1`` ->
``block2.layer[0].bn1(f1)``, ``f2`` -> ``block3.layer[0].bn1(f2)``, ``f3`` ->
``bn1(f3)``; ``f0`` is unchanged. The reference calls those BNs a second time
for this; here the tensors are taken from the single pass, so the values are
the same and BN running statistics are updated only once per forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import CifarNet, conv1x1, conv3x3, global_pool, init_weights


class PreActBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        # Attribute order matters: it is the checkpoint's key order
        # (bn1, conv1, bn2, conv2, then the optional convShortcut).
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.convShortcut = conv1x1(in_ch, out_ch, stride) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor, return_input_bn: bool = False):
        """``return_input_bn=True`` returns ``(out, bn1(x))``: the input's BN before its ReLU."""
        normed = self.bn1(x)
        act = F.relu(normed)
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        # As in the reference: an identity shortcut carries the raw input, but a
        # projection shortcut is applied to the *pre-activated* input.
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        if return_input_bn:
            return out + shortcut, normed
        return out + shortcut


class WRNStage(nn.Module):
    """Wrapper whose only child is ``layer`` (checkpoint keys: ``blockN.layer.i``)."""

    def __init__(self, n: int, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(
            *[PreActBlock(in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1) for i in range(n)]
        )

    def forward(self, x: torch.Tensor, return_input_bn: bool = False):
        """``return_input_bn=True`` returns ``(out, first block's bn1(x))``."""
        if not return_input_bn:
            return self.layer(x)
        x, normed = self.layer[0](x, return_input_bn=True)
        for i in range(1, len(self.layer)):
            x = self.layer[i](x)
        return x, normed


class WideResNet(CifarNet):
    classifier_name = "fc"

    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        w = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = conv3x3(in_channels, w[0])
        self.block1 = WRNStage(n, w[0], w[1], stride=1)
        self.block2 = WRNStage(n, w[1], w[2], stride=2)
        self.block3 = WRNStage(n, w[2], w[3], stride=2)
        self.bn1 = nn.BatchNorm2d(w[3])
        self.fc = nn.Linear(w[3], num_classes)
        self.feat_dim = w[3]
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return global_pool(F.relu(self.bn1(x)))

    def _maps_and_feat(self, x: torch.Tensor, preact: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2, f1_pre = self.block2(f1, return_input_bn=True)
        f3, f2_pre = self.block3(f2, return_input_bn=True)
        f3_pre = self.bn1(f3)
        feat = global_pool(F.relu(f3_pre))
        maps = [f0, f1_pre, f2_pre, f3_pre] if preact else [f0, f1, f2, f3]
        return maps, feat


# name -> (depth, widen factor)
WRN_CONFIGS: dict[str, tuple[int, int]] = {
    "wrn_16_1": (16, 1),
    "wrn_16_2": (16, 2),
    "wrn_40_1": (40, 1),
    "wrn_40_2": (40, 2),
}


def build_wrn(name: str, num_classes: int, in_channels: int = 3) -> WideResNet:
    depth, widen = WRN_CONFIGS[name]
    return WideResNet(depth, widen, num_classes, in_channels)
