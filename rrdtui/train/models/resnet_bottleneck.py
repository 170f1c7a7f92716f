"""CIFAR-style ResNet50: ImageNet ResNet50's bottleneck stages on a CIFAR stem.

Differences from torchvision's ``resnet50`` (which is why the two names are
kept apart, ``ResNet50`` vs ``resnet50``): a 3x3 stride-1 stem without max-pool,
projection shortcuts named ``shortcut`` rather than ``downsample``, and the
classifier named ``linear``.

``forward_with_maps`` follows RepDistiller's ``resnetv2.ResNet50``: ``f0`` =
stem after BN+ReLU, ``f1..f4`` = output of ``layer1..layer4`` (post-ReLU); with
``preact=True`` ``f1..f4`` are the last bottleneck's pre-ReLU sum of each stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import CifarNet, conv1x1, conv3x3, global_pool, init_weights, run_stage_with_preact

EXPANSION = 4


class Bottleneck(nn.Module):
    def __init__(self, in_ch: int, planes: int, stride: int = 1):
        super().__init__()
        out_ch = planes * EXPANSION
        self.conv1 = conv1x1(in_ch, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)  # stride sits on the 3x3 conv
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        # An empty Sequential is the identity and adds no state-dict keys.
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor, return_preact: bool = False):
        """``return_preact=True`` returns ``(out, preact)``: the sum before the final ReLU."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if return_preact:
            preact = out + self.shortcut(x)
            return F.relu(preact), preact
        return F.relu(out + self.shortcut(x))


class CifarBottleneckResNet(CifarNet):
    classifier_name = "linear"

    def __init__(self, num_blocks: tuple[int, int, int, int], num_classes: int, in_channels: int = 3):
        super().__init__()
        self._in_ch = 64
        self.conv1 = conv3x3(in_channels, 64)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._stage(64, num_blocks[0], stride=1)
        self.layer2 = self._stage(128, num_blocks[1], stride=2)
        self.layer3 = self._stage(256, num_blocks[2], stride=2)
        self.layer4 = self._stage(512, num_blocks[3], stride=2)
        self.feat_dim = 512 * EXPANSION
        self.linear = nn.Linear(self.feat_dim, num_classes)
        init_weights(self)

    def _stage(self, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = []
        for i in range(n):
            blocks.append(Bottleneck(self._in_ch, planes, stride if i == 0 else 1))
            self._in_ch = planes * EXPANSION
        return nn.Sequential(*blocks)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return global_pool(x)

    def _maps_and_feat(self, x: torch.Tensor, preact: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        maps = [x]
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x, pre = run_stage_with_preact(stage, x)
            maps.append(pre if preact else x)
        return maps, global_pool(x)


def build_resnet50(num_classes: int, in_channels: int = 3) -> CifarBottleneckResNet:
    return CifarBottleneckResNet((3, 4, 6, 3), num_classes, in_channels)
