"""Torchvision classification models with the zoo's feature interface.

``build_torchvision(name, ...)`` returns the model ``torchvision.models.get_model``
builds, with its state-dict keys untouched (so torchvision checkpoints load),
but with ``feat_dim`` and ``forward_with_features`` added.

How: the instance's class is swapped for a small subclass of its own
torchvision class (one per class, cached) that mixes in
:class:`TorchvisionFeatures`. ``forward_with_features`` runs the model's normal
``forward`` once, with a temporary forward pre-hook on the final ``nn.Linear``
that records that layer's input -- by definition the penultimate feature. We
chose this over a wrapper module (would prefix every key) or over rewriting each
family's forward (fragile across ~80 architectures). The hook exists only for
the duration of the call, so plain ``model(x)`` is untouched.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

# The names come from the torch-free catalog: importing torchvision.models costs seconds at every
# trainer start, so it is imported only when a torchvision model is actually built.
from rrdtui.catalog import TORCHVISION_ARCHS


class TorchvisionFeatures:
    """Mixin for torchvision models; relies on ``_head_name`` and ``feat_dim`` set on the instance."""

    _head_name: str
    feat_dim: int

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []

        def grab_input(_module: nn.Module, args: tuple) -> None:
            captured.append(args[0])

        handle = self.get_submodule(self._head_name).register_forward_pre_hook(grab_input)
        try:
            logits = self(x)
        finally:
            handle.remove()
        return torch.flatten(captured[-1], 1), logits

    def __reduce_ex__(self, protocol):
        # The per-class subclass is created at runtime and cannot be pickled by
        # name; rebuild it from the (importable) torchvision base class instead.
        return (_restore, (self._torchvision_class, self.__getstate__()))


@functools.cache
def _features_class(base: type[nn.Module]) -> type[nn.Module]:
    # Same __name__ as the base class so repr(model) still reads e.g. "ResNet(...)".
    return type(base.__name__, (TorchvisionFeatures, base), {"_torchvision_class": base})


def _restore(base: type[nn.Module], state: dict) -> nn.Module:
    obj = base.__new__(_features_class(base))
    obj.__setstate__(state)
    return obj


def _last_linear_name(model: nn.Module) -> str:
    """Name of the last registered nn.Linear: the classifier in every torchvision classifier."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no final nn.Linear classifier; not supported")
    return names[-1]


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swap the first Conv2d for one taking ``in_channels`` inputs (same name, same config)."""
    name, old = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        old.dilation,
        old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def build_torchvision(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    import torchvision

    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    head = _last_linear_name(model)
    model.__class__ = _features_class(type(model))
    model._head_name = head
    model.feat_dim = int(model.get_submodule(head).in_features)
    return model
