"""MobileNetV2 for CIFAR, as used by the RepDistiller benchmarks (width 0.5, t=6).

CIFAR-specific choices of that layout: a stride-2 stem, the second stage kept
at stride 1 (ImageNet uses 2), plain ReLU rather than ReLU6, and a full 1280
channel last conv even at width 0.5. The classifier is ``Sequential(Linear)``
(keys ``classifier.0.*``). Every inverted-residual block keeps its 1x1
expansion conv even when t=1 (the first block), unlike torchvision's version.

``forward_with_maps`` (RepDistiller's ``is_feat`` list): ``f0`` = ``conv1``
output (post-ReLU); ``f1``, ``f2``, ``f3``, ``f4`` = outputs of stages
``blocks[1]``, ``blocks[2]``, ``blocks[4]``, ``blocks[6]`` (linear bottlenecks,
no ReLU, so they can be negative). The last 1x1 ``conv2`` is not a map. The
reference defines no pre-activation variant, so ``preact`` is ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import CifarNet, global_pool, init_weights


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int):
        super().__init__()
        hidden = in_ch * expand
        self.use_residual = stride == 1 and in_ch == out_ch
        # conv.0-2: 1x1 expand, conv.3-5: 3x3 depthwise, conv.6-7: linear 1x1 project
        self.conv = nn.Sequential(
            *_conv_bn_relu(in_ch, hidden, 1),
            *_conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


# (expansion t, base channels c, repeats n, first stride s) per stage; t=None -> use T.
_STAGES = [
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
]


class CifarMobileNetV2(CifarNet):
    classifier_name = "classifier"

    def __init__(self, num_classes: int, in_channels: int = 3, expand: int = 6, width: float = 0.5):
        super().__init__()
        ch = int(32 * width)
        self.conv1 = nn.Sequential(*_conv_bn_relu(in_channels, ch, 3, stride=2))
        stages = []
        for t, c, n, s in _STAGES:
            out_ch = int(c * width)
            blocks = []
            for i in range(n):
                blocks.append(InvertedResidual(ch, out_ch, s if i == 0 else 1, expand if t is None else t))
                ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.feat_dim = int(1280 * width) if width > 1.0 else 1280
        self.conv2 = nn.Sequential(*_conv_bn_relu(ch, self.feat_dim, 1))
        self.classifier = nn.Sequential(nn.Linear(self.feat_dim, num_classes))
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return global_pool(self.conv2(self.blocks(self.conv1(x))))

    #: stages whose outputs are maps f1..f4 (the reference's choice)
    _MAP_STAGES = (1, 2, 4, 6)

    def _maps_and_feat(self, x: torch.Tensor, preact: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.conv1(x)
        maps = [x]
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in self._MAP_STAGES:
                maps.append(x)
        return maps, global_pool(self.conv2(x))


def build_mobilenetv2(num_classes: int, in_channels: int = 3) -> CifarMobileNetV2:
    return CifarMobileNetV2(num_classes, in_channels, expand=6, width=0.5)
