"""Model zoo: the RepDistiller CIFAR architectures plus any torchvision classifier.

Every model from :func:`build_model` provides ``model(x) -> logits``,
``model.forward_with_features(x) -> (feat, logits)`` (one forward pass; ``feat``
is the pooled input of the final Linear) and ``model.feat_dim``.

The CIFAR models reproduce the published checkpoints' state-dict layout exactly
(see tests/data/cifar_state_dicts.json), so ``{"model": state_dict}`` teacher
checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .base import CifarNet
from .mobilenetv2 import build_mobilenetv2
from .resnet import RESNET_CONFIGS, build_resnet
from .resnet_bottleneck import build_resnet50
from .shufflenet import build_shufflev1, build_shufflev2
from .torchvision_models import TORCHVISION_ARCHS, build_torchvision
from .vgg import VGG_CONFIGS, build_vgg
from .wrn import WRN_CONFIGS, build_wrn

Builder = Callable[[int, int], nn.Module]  # (num_classes, in_channels) -> model

_CIFAR_BUILDERS: dict[str, Builder] = {
    **{n: (lambda nc, ic, n=n: build_resnet(n, nc, ic)) for n in RESNET_CONFIGS},
    "ResNet50": build_resnet50,
    **{n: (lambda nc, ic, n=n: build_wrn(n, nc, ic)) for n in WRN_CONFIGS},
    **{n: (lambda nc, ic, n=n: build_vgg(n, nc, ic)) for n in VGG_CONFIGS},
    "MobileNetV2": build_mobilenetv2,
    "ShuffleV1": build_shufflev1,
    "ShuffleV2": build_shufflev2,
}

CIFAR_ARCHS: tuple[str, ...] = tuple(_CIFAR_BUILDERS)


def build_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build ``name`` with a ``num_classes``-way head.

    CIFAR names are matched first and case-sensitively (``ResNet50`` is the CIFAR
    bottleneck net, ``resnet50`` torchvision's). ``in_channels`` changes only the
    first conv's input channels (e.g. 1 for Fashion-MNIST).
    """
    if name in _CIFAR_BUILDERS:
        return _CIFAR_BUILDERS[name](num_classes, in_channels)
    if name in TORCHVISION_ARCHS:
        return build_torchvision(name, num_classes, in_channels)
    raise ValueError(
        f"unknown model {name!r}; valid CIFAR models: {', '.join(CIFAR_ARCHS)}; "
        f"or any torchvision classification model: {', '.join(TORCHVISION_ARCHS)}"
    )


__all__ = ["CIFAR_ARCHS", "TORCHVISION_ARCHS", "CifarNet", "build_model"]
