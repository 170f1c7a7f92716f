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

``forward_with_maps`` works the same way: temporary forward hooks on the
backbone's stage modules record their outputs during the one normal forward.
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

    def forward_with_maps(
        self, x: torch.Tensor, preact: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """One forward pass returning ``(maps, feat, logits)``; ``feat``/``logits`` as ``forward_with_features``.

        ``maps`` per family (all (B, C, H, W), in execution order):

        * ResNet / ResNeXt / Wide ResNet: the stem's output (after
          conv1/bn1/relu/maxpool) and the outputs of ``layer1``..``layer4``.
        * VisionTransformer (no spatial hierarchy): the patch embedding
          (``conv_proj``) and the encoder blocks' outputs at the end of each
          quarter of the depth, patch tokens only (class token dropped) laid out
          as a (hidden_dim, H/patch, W/patch) grid.
        * Every other family: the outputs of the backbone's stage modules (the
          children of ``features``; of ``layers`` for MNASNet; ``stem`` + the
          children of ``trunk_output`` for RegNet; ``stem`` + the children of
          ``blocks`` for MaxViT; the top-level modules before the head for
          GoogLeNet / Inception3 / ShuffleNetV2), keeping the last output at
          each spatial resolution: the tensor just before each downsampling,
          plus the backbone's final output. A height under 3/4 of the current
          stage's first one starts a new stage, so Inception's unpadded 3x3
          convs (149 -> 147) do not. Swin's channels-last outputs are permuted
          to (B, C, H, W). For these families the number of maps can depend on
          the input size (small inputs collapse late stages to 1x1, which then
          merge); use ``map_shapes`` with the real image size.

        ``preact`` is accepted for interface parity but ignored: torchvision
        blocks apply their last activation internally (often in place), so no
        clean pre-activation tensor exists and the maps are post-activation.
        Maps are whatever the modules output (e.g. DenseNet's last map is
        ``norm5``'s output, which the model's forward then ReLUs in place, so it
        holds the post-ReLU values).
        """
        del preact  # see docstring
        modules, layout = _map_plan(self)
        outputs: list[torch.Tensor] = []
        captured: list[torch.Tensor] = []

        def grab_output(_module: nn.Module, _args: tuple, output) -> None:
            if isinstance(output, torch.Tensor):
                outputs.append(output)

        def grab_input(_module: nn.Module, args: tuple) -> None:
            captured.append(args[0])

        handles = [m.register_forward_hook(grab_output) for m in modules]
        handles.append(self.get_submodule(self._head_name).register_forward_pre_hook(grab_input))
        try:
            logits = self(x)
        finally:
            for handle in handles:
                handle.remove()
        return _select_maps(outputs, layout), torch.flatten(captured[-1], 1), logits

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


# Top-level containers whose children are the backbone's stages, in execution order.
_STAGE_CONTAINERS = ("features", "layers", "trunk_output", "blocks")
# Top-level modules that belong to the head (or an auxiliary head), not the backbone.
_HEAD_NAMES = frozenset(
    {"avgpool", "dropout", "flatten", "classifier", "fc", "head", "heads", "norm", "permute"}
    | {"aux1", "aux2", "AuxLogits"}  # GoogLeNet's and Inception3's auxiliary classifiers
)


def _map_plan(model: nn.Module) -> tuple[list[nn.Module], str]:
    """Modules to hook for ``forward_with_maps`` and how to turn their outputs into maps."""
    import torchvision.models as tvm  # already imported: the model is a torchvision model

    if isinstance(model, tvm.ResNet):
        return [model.maxpool, model.layer1, model.layer2, model.layer3, model.layer4], "all"
    if isinstance(model, tvm.VisionTransformer):
        blocks = list(model.encoder.layers)
        n = len(blocks)
        ends = sorted({max(1, n * q // 4) - 1 for q in (1, 2, 3, 4)})
        return [model.conv_proj, *(blocks[i] for i in ends)], "tokens"
    modules: list[nn.Module] = []
    for name, child in model.named_children():
        if name in _STAGE_CONTAINERS:
            modules.extend(child.children())
        elif name not in _HEAD_NAMES:
            modules.append(child)
    return modules, ("channels_last" if isinstance(model, tvm.SwinTransformer) else "per_resolution")


def _select_maps(outputs: list[torch.Tensor], layout: str) -> list[torch.Tensor]:
    if layout == "all":
        return outputs
    if layout == "tokens":
        # outputs[0]: conv_proj's (B, D, h, w); the rest: (B, 1 + h*w, D) with the class token first.
        b, d, h, w = outputs[0].shape
        return [outputs[0], *(t[:, 1:].transpose(1, 2).reshape(b, d, h, w) for t in outputs[1:])]
    maps: list[torch.Tensor] = []
    stage_height = 0  # height of the first output of the current resolution stage
    for t in outputs:
        if t.dim() != 4:
            continue
        if layout == "channels_last":
            t = t.permute(0, 3, 1, 2)
        if maps and 4 * t.shape[2] > 3 * stage_height:
            # Same stage: same resolution, or only shrunk by a padding-free conv
            # (Inception's 149 -> 147): keep the later, deeper output.
            maps[-1] = t
        else:
            maps.append(t)
            stage_height = t.shape[2]
    return maps


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
