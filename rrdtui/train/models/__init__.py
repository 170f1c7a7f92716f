"""Model zoo: the RepDistiller CIFAR architectures plus any torchvision classifier.

Every model from :func:`build_model` provides ``model(x) -> logits``,
``model.forward_with_features(x) -> (feat, logits)`` (one forward pass; ``feat``
is the pooled input of the final Linear), ``model.feat_dim`` and
``model.forward_with_maps(x, preact=False) -> (maps, feat, logits)`` (one pass;
``maps`` are the intermediate feature maps, see each family's module docstring);
:func:`map_shapes` gives the maps' (C, H, W) for sizing connectors.

The CIFAR models reproduce the published checkpoints' state-dict layout exactly
(see tests/data/cifar_state_dicts.json), so ``{"model": state_dict}`` teacher
checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
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


def map_shapes(model: nn.Module, in_channels: int, image_size: int = 32) -> list[tuple[int, int, int]]:
    """(C, H, W) of each map ``model.forward_with_maps`` returns for ``image_size``-square inputs.

    Runs one dummy forward (batch 1, on the model's device and dtype) in eval
    mode under ``no_grad``, so BN running statistics are untouched; every
    submodule's training flag is restored afterwards.
    """
    param = next(model.parameters())
    x = torch.zeros(1, in_channels, image_size, image_size, device=param.device, dtype=param.dtype)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            maps, _, _ = model.forward_with_maps(x)
    finally:
        for m, training in modes:
            m.training = training
    return [(int(t.shape[1]), int(t.shape[2]), int(t.shape[3])) for t in maps]


__all__ = ["CIFAR_ARCHS", "TORCHVISION_ARCHS", "CifarNet", "build_model", "map_shapes"]
