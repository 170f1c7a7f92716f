"""ShuffleNet V1 (g=3) and V2 (1x) for CIFAR, in the RepDistiller layout.

Both use a 1x1 (!) 24-channel stem conv with no spatial downsampling; the
three stages each start with a stride-2 unit (32 -> 16 -> 8 -> 4), then global
average pooling and a ``linear`` classifier.

``forward_with_maps`` (RepDistiller's ``is_feat`` list), both versions: ``f0`` =
stem after BN+ReLU, ``f1..f3`` = outputs of ``layer1..layer3`` (post-ReLU; for
V2 that is before ``conv2``/``bn2``, which only feed the pooled feature). With
``preact=True``, ``f1..f3`` come from each stage's last unit instead:

* V1: the sum (or, for a stride-2 unit, the concatenation) before its final ReLU.
* V2: ``cat([kept half, bn3 output of the branch before its ReLU])`` -- *not*
  channel-shuffled, exactly as the reference returns it, so its channel order
  differs from the post-activation map's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import CifarNet, conv1x1, global_pool, init_weights, run_stage_with_preact


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave channels across ``groups``: (g, C/g) -> (C/g, g) ordering."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def dwconv3x3(ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(ch, ch, kernel_size=3, stride=stride, padding=1, groups=ch, bias=False)


# ---------------------------------------------------------------- ShuffleNet V1


class ShuffleV1Unit(nn.Module):
    """Grouped 1x1 -> shuffle -> depthwise 3x3 -> grouped 1x1, plus shortcut.

    Stride-2 units concatenate an avg-pooled copy of the input instead of adding
    it, so their branch only produces ``out_ch - in_ch`` channels.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        branch_ch = out_ch - in_ch if stride == 2 else out_ch
        mid = branch_ch // 4
        # The very first unit reads the 24-channel stem, which is not split into groups.
        self.first_groups = 1 if in_ch == 24 else groups
        self.conv1 = conv1x1(in_ch, mid, groups=self.first_groups)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = dwconv3x3(mid, stride)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = conv1x1(mid, branch_ch, groups=groups)
        self.bn3 = nn.BatchNorm2d(branch_ch)

    def forward(self, x: torch.Tensor, return_preact: bool = False):
        """``return_preact=True`` returns ``(out, preact)``: the tensor before the final ReLU."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            preact = torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1)
        else:
            preact = out + x
        out = F.relu(preact)
        return (out, preact) if return_preact else out


class ShuffleNetV1(CifarNet):
    classifier_name = "linear"

    def __init__(self, num_classes: int, in_channels: int = 3, widths=(240, 480, 960), repeats=(4, 8, 4), groups=3):
        super().__init__()
        self.conv1 = conv1x1(in_channels, 24)
        self.bn1 = nn.BatchNorm2d(24)
        stages, ch = [], 24
        for out_ch, n in zip(widths, repeats):
            units = []
            for i in range(n):
                units.append(ShuffleV1Unit(ch, out_ch, stride=2 if i == 0 else 1, groups=groups))
                ch = out_ch
            stages.append(nn.Sequential(*units))
        self.layer1, self.layer2, self.layer3 = stages
        self.feat_dim = widths[-1]
        self.linear = nn.Linear(self.feat_dim, num_classes)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return global_pool(self.layer3(self.layer2(self.layer1(x))))

    def _maps_and_feat(self, x: torch.Tensor, preact: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        maps = [x]
        for stage in (self.layer1, self.layer2, self.layer3):
            x, pre = run_stage_with_preact(stage, x)
            maps.append(pre if preact else x)
        return maps, global_pool(x)


# ---------------------------------------------------------------- ShuffleNet V2


class ShuffleV2Unit(nn.Module):
    """Stride-1 unit: split channels in half, transform the second half, concat, shuffle."""

    def __init__(self, ch: int):
        super().__init__()
        half = ch // 2
        self.conv1 = conv1x1(half, half)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = dwconv3x3(half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = conv1x1(half, half)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor, return_preact: bool = False):
        """``return_preact=True`` also returns ``cat([keep, branch before its last ReLU])`` (unshuffled)."""
        half = x.shape[1] // 2
        keep, work = x[:, :half], x[:, half:]
        work = F.relu(self.bn1(self.conv1(work)))
        work = self.bn2(self.conv2(work))
        if return_preact:
            pre = self.bn3(self.conv3(work))
            out = channel_shuffle(torch.cat([keep, F.relu(pre)], 1), 2)
            return out, torch.cat([keep, pre], 1)
        work = F.relu(self.bn3(self.conv3(work)))
        return channel_shuffle(torch.cat([keep, work], 1), 2)


class ShuffleV2DownUnit(nn.Module):
    """Stride-2 unit: two branches over the full input, each giving out_ch/2 channels.

    Left: depthwise 3x3 (s2) -> 1x1 (conv1, conv2). Right: 1x1 -> depthwise
    3x3 (s2) -> 1x1 (conv3..conv5).
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        mid = out_ch // 2
        self.conv1 = dwconv3x3(in_ch, stride=2)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv2 = conv1x1(in_ch, mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = conv1x1(in_ch, mid)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = dwconv3x3(mid, stride=2)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = conv1x1(mid, mid)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.bn1(self.conv1(x))
        left = F.relu(self.bn2(self.conv2(left)))
        right = F.relu(self.bn3(self.conv3(x)))
        right = self.bn4(self.conv4(right))
        right = F.relu(self.bn5(self.conv5(right)))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(CifarNet):
    classifier_name = "linear"

    def __init__(self, num_classes: int, in_channels: int = 3, widths=(116, 232, 464, 1024), repeats=(3, 7, 3)):
        super().__init__()
        self.conv1 = conv1x1(in_channels, 24)
        self.bn1 = nn.BatchNorm2d(24)
        stages, ch = [], 24
        for out_ch, n in zip(widths[:3], repeats):
            # n stride-1 units *after* the down unit, so each stage has n + 1 units.
            stages.append(nn.Sequential(ShuffleV2DownUnit(ch, out_ch), *[ShuffleV2Unit(out_ch) for _ in range(n)]))
            ch = out_ch
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = conv1x1(ch, widths[3])
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.feat_dim = widths[3]
        self.linear = nn.Linear(self.feat_dim, num_classes)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return global_pool(F.relu(self.bn2(self.conv2(x))))

    def _maps_and_feat(self, x: torch.Tensor, preact: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        maps = [x]
        for stage in (self.layer1, self.layer2, self.layer3):
            x, pre = run_stage_with_preact(stage, x)
            maps.append(pre if preact else x)
        return maps, global_pool(F.relu(self.bn2(self.conv2(x))))


def build_shufflev1(num_classes: int, in_channels: int = 3) -> ShuffleNetV1:
    return ShuffleNetV1(num_classes, in_channels)


def build_shufflev2(num_classes: int, in_channels: int = 3) -> ShuffleNetV2:
    return ShuffleNetV2(num_classes, in_channels)
