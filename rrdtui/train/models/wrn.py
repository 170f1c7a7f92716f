"""Wide ResNets for CIFAR (Zagoruyko & Komodakis 2016), ``wrn_<depth>_<k>``.

Pre-activation blocks (BN-ReLU-conv). ``depth = 6n + 4`` gives ``n`` blocks per
stage, stage widths are (16k, 32k, 64k) after a 16-channel stem, and a final
BN+ReLU precedes pooling, so the feature fed to ``fc`` is post-activation.
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        # As in the reference: an identity shortcut carries the raw input, but a
        # projection shortcut is applied to the *pre-activated* input.
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return out + shortcut


class WRNStage(nn.Module):
    """Wrapper whose only child is ``layer`` (checkpoint keys: ``blockN.layer.i``)."""

    def __init__(self, n: int, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(
            *[PreActBlock(in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1) for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


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
