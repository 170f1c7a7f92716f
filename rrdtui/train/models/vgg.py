"""CIFAR VGGs with batch norm (vgg8/11/13/16/19).

Five conv blocks (``block0``..``block4``), each a Sequential of
(conv3x3 with bias, BN, ReLU) triples, so checkpoint keys are ``blockB.{3i}``
for the conv and ``blockB.{3i+1}`` for its BN. Between blocks: 2x2 max-pools;
after the last block: global average pool and a single ``classifier`` Linear
(no VGG-style MLP head). Each block ends with its ReLU module here, whereas the
reference applies that last ReLU in ``forward``; neither has state, so the
state dicts are identical.

``forward_with_maps`` (RepDistiller's ``is_feat`` list): ``f0..f4`` = outputs
of ``block0..block4`` after their final ReLU, before any pooling. With
``preact=True`` ``f1..f4`` are the same blocks' last BN output (before the
ReLU); ``f0`` stays post-ReLU, as in the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import CifarNet, global_pool, init_weights

# Channel widths of the convs in each of the five blocks.
VGG_CONFIGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def _conv_block(in_ch: int, widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_ch, w, kernel_size=3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        in_ch = w
    return nn.Sequential(*layers)


class CifarVGG(CifarNet):
    classifier_name = "classifier"

    def __init__(self, cfg: list[list[int]], num_classes: int, in_channels: int = 3):
        super().__init__()
        ins = [in_channels] + [widths[-1] for widths in cfg[:-1]]
        self.block0 = _conv_block(ins[0], cfg[0])
        self.block1 = _conv_block(ins[1], cfg[1])
        self.block2 = _conv_block(ins[2], cfg[2])
        self.block3 = _conv_block(ins[3], cfg[3])
        self.block4 = _conv_block(ins[4], cfg[4])
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)  # parameter-free, shared
        self.feat_dim = cfg[4][-1]
        self.classifier = nn.Linear(self.feat_dim, num_classes)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[2]
        x = self.pool(self.block0(x))  # 32 -> 16
        x = self.pool(self.block1(x))  # 16 -> 8
        x = self.pool(self.block2(x))  # 8 -> 4
        x = self.block3(x)
        # The reference only pools after block3 for 64-pixel inputs, so that
        # block4 runs at 4x4 for both 32x32 and 64x64 images. Kept for parity.
        if height == 64:
            x = self.pool(x)
        x = self.block4(x)
        return global_pool(x)

    @staticmethod
    def _run_block(block: nn.Sequential, x: torch.Tensor, preact: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (block output, the map to record): the pre-ReLU BN output when ``preact``."""
        if not preact:
            x = block(x)
            return x, x
        last = len(block) - 1  # block[last] is the in-place ReLU: apply an out-of-place one instead
        for i in range(last):
            x = block[i](x)
        return F.relu(x), x

    def _maps_and_feat(self, x: torch.Tensor, preact: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        height = x.shape[2]
        f0 = self.block0(x)  # post-ReLU even with preact, as in the reference
        x, f1 = self._run_block(self.block1, self.pool(f0), preact)
        x, f2 = self._run_block(self.block2, self.pool(x), preact)
        x, f3 = self._run_block(self.block3, self.pool(x), preact)
        if height == 64:
            x = self.pool(x)
        x, f4 = self._run_block(self.block4, x, preact)
        return [f0, f1, f2, f3, f4], global_pool(x)


def build_vgg(name: str, num_classes: int, in_channels: int = 3) -> CifarVGG:
    return CifarVGG(VGG_CONFIGS[name], num_classes, in_channels)
