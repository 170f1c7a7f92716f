"""CIFAR ResNets (He et al. 2016, "6n+2" layout) incl. the 4x-wide variants.

Layout (matches the published RepDistiller checkpoints): a 3x3 stem conv, three
stages of ``n`` basic blocks at 32x32 / 16x16 / 8x8, global average pool, ``fc``.
The first block of a stage gets a ``downsample`` (1x1 conv + BN) projection when
its stride or channel count changes -- for the x4 variants that includes
stage 1 (stem 32 -> 64 channels).

``forward_with_maps`` (RepDistiller's ``is_feat`` list): ``f0`` = stem after
BN+ReLU, ``f1..f3`` = output of ``layer1..layer3`` (post-ReLU). With
``preact=True`` ``f1..f3`` are instead the last block's pre-ReLU sum
(residual branch + shortcut) of each stage; ``f0`` is unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import CifarNet, conv1x1, conv3x3, global_pool, init_weights, run_stage_with_preact


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor, return_preact: bool = False):
        """``return_preact=True`` returns ``(out, preact)``: the sum before the final ReLU."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        if return_preact:
            preact = out + shortcut
            return F.relu(preact), preact
        return F.relu(out + shortcut)


class CifarResNet(CifarNet):
    classifier_name = "fc"

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        stem, w1, w2, w3 = widths
        self.conv1 = conv3x3(in_channels, stem)
        self.bn1 = nn.BatchNorm2d(stem)
        self.layer1 = self._stage(stem, w1, n, stride=1)
        self.layer2 = self._stage(w1, w2, n, stride=2)
        self.layer3 = self._stage(w2, w3, n, stride=2)
        self.fc = nn.Linear(w3, num_classes)
        self.feat_dim = w3
        init_weights(self)

    @staticmethod
    def _stage(in_ch: int, out_ch: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_ch, out_ch, stride)]
        blocks += [BasicBlock(out_ch, out_ch) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return global_pool(x)

    def _maps_and_feat(self, x: torch.Tensor, preact: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        maps = [x]
        for stage in (self.layer1, self.layer2, self.layer3):
            x, pre = run_stage_with_preact(stage, x)
            maps.append(pre if preact else x)
        return maps, global_pool(x)


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)  # the "x4" variants: 4x wider stages, 2x wider stem

# name -> (depth, widths)
RESNET_CONFIGS: dict[str, tuple[int, tuple[int, int, int, int]]] = {
    "resnet8": (8, _NARROW),
    "resnet14": (14, _NARROW),
    "resnet20": (20, _NARROW),
    "resnet32": (32, _NARROW),
    "resnet44": (44, _NARROW),
    "resnet56": (56, _NARROW),
    "resnet110": (110, _NARROW),
    "resnet8x4": (8, _WIDE),
    "resnet32x4": (32, _WIDE),
}


def build_resnet(name: str, num_classes: int, in_channels: int = 3) -> CifarResNet:
    depth, widths = RESNET_CONFIGS[name]
    return CifarResNet(depth, widths, num_classes, in_channels)
